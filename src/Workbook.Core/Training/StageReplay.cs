// A stage whose trajectory another stage of the run computes first (issue 13). guarded's RL stage trains exactly as
// sft-then-rl's: the same start model, data, reward, seed and training options; only when it evaluates and whether a
// stop rule watches differ, and neither touches training (evaluations draw from their own generator). So:
//  1. The first stage records every step's metrics and data position, and a copy of the weights after each step at
//     which the second stage reads the model (its evaluations, the rule's checks, checkpoints, the last step).
//  2. The second stage replays the record instead of training: each step logs the recorded metrics (its own
//     step_time, and replayed_from on every line), and where it reads the model the weights are the recorded ones.
//     Its evaluations, the rule and its checkpoints then run as in training, on the same models.
//  3. Only when the replay is exact: the start models' fingerprints and the trajectory options are equal, the record
//     is complete (not resumed, not stopped early) and the second stage starts at step 0 and saves no checkpoint
//     before its last step (a replayed checkpoint holds no optimizer state to resume from). Otherwise it trains.
using TorchSharp;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Training;

public sealed class StageRecording(string source, IReadOnlySet<long> weightSteps) : IDisposable
{
    /// <summary>The recorded stage, for the replaying stage's metrics lines (replayed_from).</summary>
    public string Source { get; } = source;

    /// <summary>The steps after which the weights are kept.</summary>
    public IReadOnlySet<long> WeightSteps { get; } = weightSteps;

    /// <summary>The recorded stage's start model (ModelFingerprint); null until it starts at step 0.</summary>
    public string? StartFingerprint { get; private set; }

    /// <summary>False once the record cannot be replayed (the stage resumed midway).</summary>
    public bool Usable { get; private set; } = true;

    internal sealed record StepRecord(
        Dictionary<string, double> Metrics,
        int Epoch,
        int Cursor,
        long NumTokens,
        double LastGrad
    )
    {
        public double? StartGrad { get; init; }
    }

    readonly Dictionary<long, StepRecord> steps = [];
    readonly Dictionary<long, Dictionary<string, Tensor>> weights = [];

    /// <summary>The recorded stage's <see cref="Trajectory"/> options.</summary>
    public string? TrajectoryOptions { get; private set; }

    /// <param name="fingerprint">the start model's fingerprint (computed once by the trainer)</param>
    internal void Begin(long fromStep, TrainOptions options, Func<string> fingerprint)
    {
        if (fromStep != 0)
            Usable = false;
        else
            (StartFingerprint, TrajectoryOptions) = (fingerprint(), Trajectory(options));
    }

    internal void Add(long step, StepRecord r, Qwen3ForCausalLM model)
    {
        if (!Usable)
            return;
        steps[step] = r with { Metrics = new(r.Metrics) };
        if (!WeightSteps.Contains(step))
            return;
        using var _ = no_grad();
        using var scope = NewDisposeScope(); // the detached views die here; the copies outlive it
        weights[step] = model
            .named_parameters()
            .ToDictionary(p => p.name, p => p.parameter.detach().clone().DetachFromDisposeScope());
    }

    /// <summary>Whether every step 1..<paramref name="maxSteps"/> is recorded, with the weights at
    /// <paramref name="reads"/>.</summary>
    public bool Covers(long maxSteps, IEnumerable<long> reads) =>
        Usable
        && StartFingerprint is not null
        && Enumerable.Range(1, (int)maxSteps).All(s => steps.ContainsKey(s))
        && reads.All(weights.ContainsKey);

    /// <summary>Step <paramref name="step"/>'s record; the model takes its weights when they were kept.</summary>
    internal StepRecord Replay(long step, Qwen3ForCausalLM model)
    {
        var r = steps[step];
        if (weights.TryGetValue(step, out var w))
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())
                    p.copy_(w[name]);
        return r with { Metrics = new(r.Metrics) };
    }

    /// <summary>The steps after which a stage with these options reads its model: evaluations, checkpoints, the
    /// stop rule's checks (GRPO) and the last step.</summary>
    public static SortedSet<long> ModelReads(TrainOptions o)
    {
        var s = new SortedSet<long> { o.MaxSteps };
        for (long t = 1; t <= o.MaxSteps; t++)
            if (
                (o.EvalSteps > 0 && t % o.EvalSteps == 0)
                || (o.SaveSteps > 0 && t % o.SaveSteps == 0)
                || (o is GrpoOptions { StopWhen: not null } g && t % g.StopCheckSteps == 0)
            )
                s.Add(t);
        return s;
    }

    /// <summary>The options with everything that does not change the trajectory set to one value: two stages whose
    /// trajectory options are equal (and whose start models are) train the same models step by step.</summary>
    public static string Trajectory(TrainOptions o)
    {
        var t = o is GrpoOptions g
            ? g with
            {
                StopWhen = null,
                StopCheckSteps = 1,
                StopPatience = 1,
                StopRestoreBest = false,
                StopHindsight = false,
            }
            : o;
        return (t with { EvalSteps = 0, SaveSteps = 0, SaveTotalLimit = 1, LoggingSteps = 1 }).ToJson();
    }

    public void Dispose()
    {
        foreach (var w in weights.Values)
        foreach (var t in w.Values)
            t.Dispose();
        weights.Clear();
        steps.Clear();
    }
}
