// The loop both trainers share, top to bottom: resume from the last good complete checkpoint (or refuse to overwrite
// an existing run), evaluate at step 0, then per step: one TrainStep in its own dispose scope, the non-finite guard,
// the optimizer update, logging, periodic evaluation and checkpoints; a final evaluation and checkpoint at the end.
// Data order and sampling randomness derive from (seed, epoch) and (seed, step), so a resumed run needs no RNG state.
// With an evaluator, the policy at the stage's start is kept (StageStart, Forgetting.cs) for eval_kl_from_start.
using System.Diagnostics;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Training;

public abstract class TrainerBase<TOptions> : ITrainer
    where TOptions : TrainOptions
{
    protected readonly Qwen3ForCausalLM Model;
    protected readonly TOptions Opt;
    protected readonly string OutDir;
    protected readonly Evaluator? Eval;
    protected AdamW Optimizer = null!;
    protected TrainerState State = null!;
    public MetricsLog? Log { get; private set; }
    public event Action<long, IReadOnlyDictionary<string, double>>? OnLog;

    /// <summary>Called after every step (tests use it to stop a run midway).</summary>
    public Action<long>? AfterStep { get; set; }

    /// <summary>Extra fields written on every metrics line (for instance the experiment stage).</summary>
    public Dictionary<string, object> LogFields { get; } = new();

    /// <summary>Record this stage's trajectory for a stage that will replay it (StageReplay.cs).</summary>
    public StageRecording? RecordInto { get; set; }

    /// <summary>Replay this recorded trajectory instead of training, when the replay is exact (StageReplay.cs, 3);
    /// <see cref="Replayed"/> says whether it was.</summary>
    public StageRecording? ReplayFrom { get; set; }

    /// <summary>Whether the last <see cref="Train"/> replayed <see cref="ReplayFrom"/> instead of training.</summary>
    public bool Replayed { get; private set; }

    protected abstract string TrainerName { get; }
    protected abstract int DatasetSize { get; }

    protected TrainerBase(Qwen3ForCausalLM model, TOptions options, string outDir, Evaluator? evaluator)
    {
        options.Validate();
        // AdamW's first update moves a weight by up to lr / (1 - beta1): it must be a finite float
        if (!float.IsFinite((float)(options.LearningRate / (1 - options.AdamBeta1))))
            throw new WorkbookException(
                $"option learning_rate: {options.LearningRate} is too large (the update overflows float32)"
            );
        if (options.NumTrainEpochs is not null) // issue 12: never run max_steps 0 silently
            throw new WorkbookException(
                "num_train_epochs must be resolved to steps before training (TrainOptions.ResolveSteps)"
            );
        Model = model;
        Opt = options;
        OutDir = outDir;
        Eval = evaluator;
    }

    protected DataOrder Order = null!;

    /// <summary>The option that sets the rows of a step's forward, the rows, the longest row, and what keeps the step
    /// the same when that option is lowered: checked against the memory available before anything is allocated
    /// (Training/StepMemory.cs). Null: not checked.</summary>
    protected virtual (string Option, long Rows, long Length, string Remedy)? StepShape => null;

    /// <summary>Whether the step's loss takes its log-probabilities through the fused head (no logits kept).</summary>
    protected virtual bool FusedHead => false;

    public TrainerState Train(bool resume = false)
    {
        Model.GradientCheckpointing = Opt.CheckpointingFor(Model.ParameterCount());
        if (StepShape is var (option, rows, length, remedy))
            StepMemory.Check(
                Model.Config,
                option,
                rows,
                length,
                remedy: remedy,
                checkpointing: Model.GradientCheckpointing,
                fusedHead: FusedHead
            );
        Directory.CreateDirectory(OutDir);
        Optimizer = new AdamW(Model.named_parameters(), Opt.AdamBeta1, Opt.AdamBeta2, Opt.AdamEpsilon, Opt.WeightDecay);
        more = MoreOptimizers();
        State = new TrainerState(0, 0, 0, 0, Opt.Seed, TrainerName);
        TrainerCheckpoint.CleanTemp(OutDir);
        startMaxAbs = null;
        startGrad = null;
        firstGrads.Clear();
        // a resume starts from the last good checkpoint: after a blow-up the newer ones hold exploded weights
        if (resume && TrainerCheckpoint.LatestGood(OutDir) is { } ckpt)
        {
            State = TrainerCheckpoint.Load(ckpt, Model, Optimizer, more);
            if (State.Trainer != TrainerName)
                throw new WorkbookException($"{ckpt}: a {State.Trainer} checkpoint cannot resume a {TrainerName} run");
            if (TrainerCheckpoint.Health(ckpt) is { } h)
                (startMaxAbs, startGrad) = (h.StartMaxAbsWeight, h.StartGradNorm);
            foreach (var later in TrainerCheckpoint.Complete(OutDir).Where(d => string.CompareOrdinal(d, ckpt) > 0))
                TrainerCheckpoint.Remove(later); // the run continues from ckpt, as its metrics do
        }
        else if (File.Exists(Path.Combine(OutDir, "metrics.jsonl")) && !resume)
            throw new WorkbookException(
                $"{OutDir} already holds a run; use --resume to continue it or choose another --out"
            );
        AtomicFile.WriteAllText(Path.Combine(OutDir, "options.json"), Opt.ToJson());
        startMaxAbs ??= CheckpointHealth.MaxAbsOf(Model);
        Order = new DataOrder(DatasetSize, Opt.Seed, State.Epoch, State.Cursor);
        OnResume();
        // evaluations, the start snapshot and checkpoints run in dispose scopes like the steps: a temporary outside
        // one can be finalized by a GC on another seed's thread while a native call reads it (see HeldScalars)
        // the weights before this session's first step, hashed at most once for everything that reads them there:
        // the start snapshot, the recording, the replay check and the first evaluation (EvalMemo.cs)
        string? startPrint = null;
        string StartPrint() => startPrint ??= ModelFingerprint.Of(Model);
        if (Eval is not null && Eval.Options.KlFromStart)
            using (NewDisposeScope())
                start = StageStart.Prepare(OutDir, Model, State.Step, StartModel, Eval, StartPrint);
        RecordInto?.Begin(State.Step, Opt, StartPrint);
        var replay = CanReplay(resume, StartPrint) ? ReplayFrom : null;
        Replayed = replay is not null;
        if (replay is not null)
            LogFields["replayed_from"] = replay.Source;
        using var log = Log = new MetricsLog(OutDir, truncateAfterStep: resume ? State.Step : null);
        log.Logged += (s, m) => OnLog?.Invoke(s, m);
        Model.train();
        if (State.Step == 0 && !log.HasEvalAt(0))
            Evaluate(0, StartPrint);
        long warmup = (long)Math.Ceiling(Opt.WarmupRatio * Opt.MaxSteps);
        for (long step = State.Step; step < Opt.MaxSteps && !Finished; step++)
        {
            var sw = Stopwatch.StartNew();
            var lr = LrSchedule.At(Opt.LrSchedulerType, Opt.LearningRate, step, Opt.MaxSteps, warmup);
            Dictionary<string, double> metrics;
            if (replay is not null)
            {
                var r = replay.Replay(step + 1, Model);
                metrics = r.Metrics;
                Order = new DataOrder(DatasetSize, Opt.Seed, r.Epoch, r.Cursor);
                State = State with { NumTokens = r.NumTokens };
                (lastGrad, startGrad) = (r.LastGrad, r.StartGrad);
            }
            else
            {
                using (NewDisposeScope())
                    metrics = TrainStep(step, lr);
                Memory.AfterTrainingStep(Model.ParameterCount());
            }
            RecordInto?.Add(
                step + 1,
                new StageRecording.StepRecord(metrics, Order.Epoch, Order.Cursor, State.NumTokens, lastGrad)
                {
                    StartGrad = startGrad,
                },
                Model
            );
            metrics["learning_rate"] = lr;
            metrics["step_time"] = sw.Elapsed.TotalSeconds;
            State = State with { Step = step + 1, Epoch = Order.Epoch, Cursor = Order.Cursor };
            metrics["epoch"] = Order.Epoch + Order.Cursor / (double)Math.Max(1, DatasetSize);
            log.Log(step + 1, metrics, LogFields);
            bool last = step + 1 == Opt.MaxSteps;
            if (Opt.EvalSteps > 0 && (step + 1) % Opt.EvalSteps == 0 && !last)
                Evaluate(step + 1);
            bool stop = StopAfter(step + 1); // a stop rule (GRPO) ends the stage here: checkpoint this step
            if ((Opt.SaveSteps > 0 && (step + 1) % Opt.SaveSteps == 0) || last || stop)
                SaveCheckpoint();
            AfterStep?.Invoke(step + 1);
            if (stop)
                break;
        }
        if (State.Step == Opt.MaxSteps && Opt.MaxSteps > 0 && !log.HasEvalAt(Opt.MaxSteps))
            Evaluate(Opt.MaxSteps);
        start?.Dispose();
        foreach (var (_, o) in more)
            o.Dispose();
        Optimizer.Dispose();
        return State;
    }

    /// <summary>StageReplay.cs, 3: a fresh start at step 0 from the recorded start model, the same trajectory
    /// options, a complete record with the weights at every step this stage reads, and no checkpoint before the
    /// last step.</summary>
    bool CanReplay(bool resume, Func<string> startPrint) =>
        ReplayFrom is { } r
        && !resume
        && State.Step == 0
        && (Opt.SaveSteps == 0 || Opt.SaveSteps >= Opt.MaxSteps)
        && r.TrajectoryOptions == StageRecording.Trajectory(Opt)
        && r.Covers(Opt.MaxSteps, StageRecording.ModelReads(Opt))
        && r.StartFingerprint == startPrint();

    /// <param name="fingerprint">the model's fingerprint if known (the weights before the first step)</param>
    protected void Evaluate(long step, Func<string>? fingerprint = null)
    {
        if (Eval is null)
            return;
        var sw = Stopwatch.StartNew();
        // the last step's gradients are spent (a step starts by dropping them, or zeroing the kept ones): dropped
        // now, kept ones too, not held through the evaluation (a 0.6B model's float32 gradients are 2.2 GB), and the
        // freed heap returned (Util/Memory.cs)
        Optimizer.DropAllGrads();
        foreach (var (_, o) in more)
            o.DropAllGrads();
        Memory.BeforeEvaluation(Model.ParameterCount());
        Dictionary<string, double> m;
        using (NewDisposeScope())
            m = Eval.Run(Model, false, start, step == 0, fingerprint);
        m["eval_runtime"] = sw.Elapsed.TotalSeconds; // TRL's name: seconds this evaluation took
        Model.train();
        Log!.Log(step, m, LogFields);
        LastEval = (step, m);
        OnEvaluated(step, m);
    }

    /// <summary>The latest evaluation of this session (step, metrics).</summary>
    protected (long Step, Dictionary<string, double> Metrics)? LastEval { get; private set; }

    protected virtual void OnEvaluated(long step, Dictionary<string, double> metrics) { }

    /// <summary>After step <paramref name="step"/> is logged and evaluated: true ends the stage there.</summary>
    protected virtual bool StopAfter(long step) => false;

    /// <summary>True when the stage ended before max_steps (a resumed stage that had stopped does not train
    /// on).</summary>
    protected virtual bool Finished => false;

    protected void SaveCheckpoint()
    {
        using var scope = NewDisposeScope();
        var health = CheckpointHealth.Judge(CheckpointHealth.MaxAbsOf(Model), lastGrad, startMaxAbs!.Value, startGrad);
        TrainerCheckpoint.Save(OutDir, Model, Optimizer, State, Opt.SaveTotalLimit, health, more);
    }

    IReadOnlyList<(string File, AdamW Optimizer)> more = [];

    /// <summary>Optimizers besides <see cref="Optimizer"/> (each with its checkpoint file), made at the start of
    /// <see cref="Train"/> after it, so that a resume loads their state and every checkpoint saves it.</summary>
    protected virtual IReadOnlyList<(string File, AdamW Optimizer)> MoreOptimizers() => [];

    // the references a checkpoint's health is judged against: max |w| at the run's start, and the median gradient
    // norm of its first steps (both carried across resumes in health.json)
    double? startMaxAbs,
        startGrad;
    readonly List<double> firstGrads = [];
    double lastGrad;
    const int FirstGradSteps = 5;

    protected virtual void OnResume() { }

    StageStart? start;

    /// <summary>A frozen copy of the policy at the stage's start that the trainer keeps anyway (GRPO's reference when
    /// β &gt; 0): the stage-start snapshot then stores no second copy of the weights.</summary>
    protected virtual Qwen3ForCausalLM? StartModel => null;

    /// <summary>One optimizer step's work: forward/backward (and the update, through <see cref="Update"/>); returns
    /// metrics.</summary>
    protected abstract Dictionary<string, double> TrainStep(long step, double lr);

    /// <summary>Clip, check for non-finite values (then stop without applying the update), and step the
    /// optimizer.</summary>
    protected double Update(double lr, double lossValue, long step)
    {
        var gn = ClipAndCheck(Optimizer, Opt.MaxGradNorm, lossValue, step, "");
        lastGrad = gn;
        if (startGrad is null && gn > 0)
        {
            firstGrads.Add(gn);
            if (firstGrads.Count == FirstGradSteps)
                startGrad = firstGrads.Order().ElementAt(FirstGradSteps / 2);
        }
        Optimizer.StepWith(lr);
        return gn;
    }

    /// <summary>Clip one optimizer's gradients and refuse a non-finite step, naming the term (e.g. "grpo_"), before
    /// any update is applied; <see cref="Update"/> does this for the main optimizer. Checkpoint health follows the main
    /// optimizer's gradients only.</summary>
    protected double ClipAndCheck(AdamW opt, double maxNorm, double lossValue, long step, string term)
    {
        var gn = opt.ClipGradNorm(maxNorm);
        if (!double.IsFinite(lossValue) || !double.IsFinite(gn))
            throw new WorkbookException(
                $"non-finite {term}{(double.IsFinite(lossValue) ? "gradient norm" : "loss")} at step {step + 1} "
                    + $"({term}loss {lossValue}, {term}grad_norm {gn}); the update was not applied and the run "
                    + "stopped. "
                    + GoodCheckpointAdvice()
            );
        return gn;
    }

    /// <summary>Where to go on after a blow-up: the last checkpoint saved before it began (finite weights of sane
    /// size), which --resume starts from.</summary>
    string GoodCheckpointAdvice()
    {
        if (TrainerCheckpoint.LatestGood(OutDir) is not { } good)
            return "Last good checkpoint: none yet (no checkpoint from before the blow-up); "
                + "start again with a lower learning rate or check the data.";
        var h = TrainerCheckpoint.Health(good);
        var size = h is null ? "" : $", max |w| {h.MaxAbsWeight:G3}";
        var dropped = TrainerCheckpoint.Complete(OutDir).Count(d => string.CompareOrdinal(d, good) > 0);
        return $"Last good checkpoint: {good} (step {TrainerCheckpoint.StepOf(good)}{size}"
            + (dropped > 0 ? $"; the {dropped} newer one(s) hold exploded weights" : "")
            + "). Lower the learning rate or check the data, then --resume: it continues from that checkpoint.";
    }
}

/// <summary>Epoch-wise shuffled order over a dataset: epoch e is the permutation drawn from (seed, e).</summary>
public sealed class DataOrder
{
    readonly int n;
    readonly long seed;
    int[] perm;
    public int Epoch { get; private set; }
    public int Cursor { get; private set; }

    public DataOrder(int n, long seed, int epoch = 0, int cursor = 0)
    {
        if (n <= 0)
            throw new WorkbookException("the training set is empty");
        this.n = n;
        this.seed = seed;
        Epoch = epoch;
        Cursor = cursor;
        perm = Permutation(epoch);
    }

    int[] Permutation(int epoch)
    {
        var r = new Random(unchecked((int)(seed * 1_000_003 + epoch * 7919)));
        var p = Enumerable.Range(0, n).ToArray();
        for (int i = n - 1; i > 0; i--)
        {
            int j = r.Next(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }

    public int[] Next(int count)
    {
        var r = new int[count];
        for (int i = 0; i < count; i++)
        {
            if (Cursor == n)
            {
                Epoch++;
                Cursor = 0;
                perm = Permutation(Epoch);
            }
            r[i] = perm[Cursor++];
        }
        return r;
    }
}
