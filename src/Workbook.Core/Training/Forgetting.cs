// Forgetting while it happens (issue 14, §4): at every evaluation of a stage, how far the policy has moved from the
// policy at the stage's start, and how sure it is.
//  1. eval_kl_from_start: forward KL(p_start ‖ p_cur) per response, E_x E_{y~p_start}[Σ_t KL(p_start(·|x,y<t) ‖
//     p_cur(·|x,y<t))], exact over the vocabulary at every position of one completion per held-out prompt sampled once
//     from p_start (the evaluation's own sampling settings and seed, so these are the samples of the stage's first
//     evaluation). By the chain rule its expectation is the sequence-level KL(p_start(y|x) ‖ p_cur(y|x)), the quantity
//     RL's Razor (arXiv 2509.04259) relates to forgetting; eval_kl_from_start_per_token divides by the tokens instead.
// 2. eval_entropy: the policy's mean per-token entropy on its own evaluation samples; eval_entropy_per_response sums it
//     over each completion. Both use softmax(logits / temperature), the distribution the samples come from (as TRL's
//     `entropy`); top-p / top-k truncation is not applied. Recorded while sampling, not by a second forward.
//  3. What the snapshot costs (StageStart): the sampled completions (ints, a few KB, with each token's entropy as
//     sampled) in <stage>/start/samples.json and,
//     unless the trainer holds the start model already (GRPO's and joint's frozen reference when β > 0, which is that
//     model), one copy of the weights in <stage>/start/ on disk. That copy is loaded when an evaluation needs it and
//     disposed after it, so memory holds a second model only while evaluating (a 0.6B model: ~1.2 GB in bf16, as GRPO's
//     reference). Compute per evaluation: none at the stage's first (the policy is p_start: KL 0), then one forward
//     of each model over the held-out prompts and completions, and of the current one only once p_start's
//     log-probabilities are kept (StageStart.LogProbCacheBytes).
// 4. Resume: p_start is the stage's start, not the resume point: the folder is written once at step 0 (samples last, so
//     their file marks a complete snapshot) and read back on resume. A stage resumed past step 0 without it (a run from
//     before this feature) logs no KL rather than a KL from the wrong policy.
using System.Text.Json;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Training;

public static class Forgetting
{
    /// <summary>Per completion, Σ_t KL(p_a(·|x,y&lt;t) ‖ p_b(·|x,y&lt;t)) over its positions, exact over the
    /// vocabulary, with p = softmax(logits / temperature); and the number of positions. With
    /// <paramref name="aCache"/>, p_a's log-probabilities of each batch are taken from it (keyed by the batch's first
    /// row) where present and stored there where not, so <paramref name="a"/> may be null once every batch is
    /// cached; the values are the same (the same batches through the same model).</summary>
    /// <param name="logProbBytes">the float64 budget per tensor (<see cref="LogProbBytes"/>; smaller in tests): a
    /// batch whose one row is over it (long completions at a full vocabulary) runs each model's layers once and its
    /// head and softmax over chunks of positions within it, uncached</param>
    public static (double[] PerSequence, int[] Tokens) Kl(
        Qwen3ForCausalLM? a,
        Qwen3ForCausalLM b,
        IReadOnlyList<int[]> prompts,
        IReadOnlyList<int[]> completions,
        int padId,
        double temperature,
        int batchSize = 32,
        Dictionary<int, Tensor>? aCache = null,
        long logProbBytes = LogProbBytes
    ) =>
        PerPosition(
            prompts,
            completions,
            padId,
            Rows(b, completions, batchSize, logProbBytes),
            (first, ids, mask, P) =>
            {
                long positions = Math.Max(1, logProbBytes / (ids.shape[0] * (long)b.Config.VocabSize * sizeof(double)));
                if (ids.shape[1] - P > positions && !(aCache?.ContainsKey(first) ?? false))
                    return ChunkedKl(
                        a ?? throw new ArgumentException("p_a is needed for a batch that is not cached"),
                        b,
                        ids,
                        mask,
                        P,
                        temperature,
                        positions
                    );
                Tensor la;
                if (aCache is not null && aCache.TryGetValue(first, out var kept))
                    la = kept;
                else
                {
                    la = LogProbs(
                        a ?? throw new ArgumentException("p_a is needed for a batch that is not cached"),
                        ids,
                        mask,
                        P,
                        temperature
                    );
                    if (aCache is not null)
                        aCache[first] = la.DetachFromDisposeScope();
                }
                return KlPerPosition(la, LogProbs(b, ids, mask, P, temperature));
            }
        );

    /// <summary>KL per position [N, C] as <see cref="Kl"/> computes it, with each model's final hidden states made
    /// once and its head and float64 softmax run over <paramref name="positions"/> positions at a time: a 0.6B
    /// model's row of 256 completion tokens is 311 MB per float64 tensor, three of them at once.</summary>
    static Tensor ChunkedKl(
        Qwen3ForCausalLM a,
        Qwen3ForCausalLM b,
        Tensor ids,
        Tensor mask,
        int P,
        double temperature,
        long positions
    )
    {
        using var scope = NewDisposeScope();
        long C = ids.shape[1] - P;
        // position P−1+t predicts completion token t
        Tensor Hidden(Qwen3ForCausalLM m) => m.HiddenStates(ids.to(m.Device), mask.to(m.Device)).narrow(1, P - 1, C);
        var (ha, hb) = (Hidden(a), Hidden(b));
        var parts = new List<Tensor>();
        for (long t = 0; t < C; t += positions)
        {
            using var chunk = NewDisposeScope();
            long n = Math.Min(positions, C - t);
            var la = LogSoftmax(a.Logits(ha.narrow(1, t, n)), temperature);
            var lb = LogSoftmax(b.Logits(hb.narrow(1, t, n)), temperature);
            parts.Add(KlPerPosition(la, lb).MoveToOuterDisposeScope());
        }
        return cat(parts, 1).MoveToOuterDisposeScope();
    }

    /// <summary>The rows per batch <see cref="Kl"/> uses, and the bytes p_a's log-probabilities take over all
    /// batches.</summary>
    public static (int Rows, long Bytes) KlBatches(
        Qwen3ForCausalLM model,
        IReadOnlyList<int[]> prompts,
        IReadOnlyList<int[]> completions,
        int batchSize = 32
    )
    {
        int rows = Rows(model, completions, batchSize);
        long bytes = 0;
        for (int i = 0; i < completions.Count; i += rows)
        {
            int m = Math.Min(rows, completions.Count - i);
            int C = Math.Max(1, completions.Skip(i).Take(m).Max(c => c.Length));
            bytes += (long)m * C * model.Config.VocabSize * sizeof(double);
        }
        return (rows, bytes);
    }

    /// <summary>Per completion, Σ_t H(p(·|x,y&lt;t)) over its positions (p = softmax(logits / temperature)), and the
    /// number of positions.</summary>
    public static (double[] PerSequence, int[] Tokens) Entropy(
        Qwen3ForCausalLM model,
        IReadOnlyList<int[]> prompts,
        IReadOnlyList<int[]> completions,
        int padId,
        double temperature,
        int batchSize = 32
    ) =>
        PerPosition(
            prompts,
            completions,
            padId,
            Rows(model, completions, batchSize),
            (_, ids, mask, P) =>
            {
                var lp = LogProbs(model, ids, mask, P, temperature);
                return -(lp.exp() * lp).sum(-1);
            }
        );

    /// <summary>The most bytes one [rows, C, V] float64 tensor of a KL or entropy forward takes. A KL batch holds
    /// three of them at once, beside both models: at 256 MiB, with each forward's temporaries kept until the batch
    /// ended, a 0.6B model's evaluation rose 2 GB for each batch of three rows; at 64 MiB a full 151,936-token
    /// vocabulary goes one row at a time, a compact one (the main job's) the whole batch, as before.</summary>
    public const long LogProbBytes = 64L << 20;

    /// <summary>Rows per forward so that one [rows, C, V] float64 tensor stays within <see cref="LogProbBytes"/>
    /// (at least one row).</summary>
    static int Rows(
        Qwen3ForCausalLM model,
        IReadOnlyList<int[]> completions,
        int batchSize,
        long logProbBytes = LogProbBytes
    )
    {
        long perRow =
            Math.Max(1, completions.Count == 0 ? 1 : completions.Max(c => c.Length))
            * (long)model.Config.VocabSize
            * sizeof(double);
        return Losses.RowsWithin(logProbBytes, perRow, batchSize);
    }

    /// <summary>Float64 log-probabilities [N, C, V] of the distributions that predict completion positions
    /// 0..C−1.</summary>
    static Tensor LogProbs(Qwen3ForCausalLM model, Tensor ids, Tensor mask, int P, double temperature)
    {
        using var scope = NewDisposeScope(); // the float32 logits and float64 copies die here, not with the batch
        var dev = model.Device;
        long C = ids.shape[1] - P;
        var logits = model.Forward(ids.to(dev), mask.to(dev)).narrow(1, P - 1, C); // position P−1+t predicts token t
        return LogSoftmax(logits, temperature).MoveToOuterDisposeScope();
    }

    /// <summary>log softmax(logits / temperature) in float64, on the CPU.</summary>
    static Tensor LogSoftmax(Tensor logits, double temperature) =>
        logits.to(ScalarType.Float64).Over(temperature).log_softmax(-1).cpu();

    /// <summary>Σ_v p_a (log p_a − log p_b) per position, from float64 log-probabilities [N, C, V]. The difference is
    /// made in <paramref name="lb"/> (consumed; a full vocabulary's rows are 78 MB each in float64), never in
    /// <paramref name="la"/>, which may be a kept one.</summary>
    static Tensor KlPerPosition(Tensor la, Tensor lb) => lb.neg_().add_(la, HeldScalars.One).mul_(la.exp()).sum(-1);

    /// <summary>Batches of left-padded prompts | right-padded completions; <paramref name="f"/> (the batch's first
    /// row, ids, mask, prompt length) gives a value per position [N, C]; returns its sum over each completion's real
    /// positions.</summary>
    static (double[] PerSequence, int[] Tokens) PerPosition(
        IReadOnlyList<int[]> prompts,
        IReadOnlyList<int[]> completions,
        int padId,
        int batchSize,
        Func<int, Tensor, Tensor, int, Tensor> f
    )
    {
        int n = prompts.Count;
        var sums = new double[n];
        var tokens = completions.Select(c => c.Length).ToArray();
        using var _ = no_grad();
        for (int i = 0; i < n; i += batchSize)
        {
            using var scope = NewDisposeScope();
            int m = Math.Min(batchSize, n - i);
            var ps = prompts.Skip(i).Take(m).ToList();
            var cs = completions.Skip(i).Take(m).ToList();
            int P = ps.Max(p => p.Length),
                C = Math.Max(1, cs.Max(c => c.Length));
            var (ids, mask) = PromptPadding.PromptCompletion(ps, P, cs, C, padId);
            var v = f(i, tensor(ids, [m, P + C]), tensor(mask, [m, P + C]), P);
            var real = new double[m * C];
            for (int j = 0; j < m; j++)
            for (int t = 0; t < cs[j].Length; t++)
                real[j * C + t] = 1;
            var s = (v * tensor(real, [m, C], ScalarType.Float64)).sum(1).data<double>().ToArray();
            Array.Copy(s, 0, sums, i, m);
        }
        return (sums, tokens);
    }
}

/// <summary>The policy at a stage's start (see Forgetting's header, 3-4): its completions of the held-out prompts and
/// where its weights are. Its log-probabilities on them do not change during the stage, so the first evaluation that
/// computes a KL (the stage's second: the first logs 0) keeps them when they take at most
/// <see cref="LogProbCacheBytes"/> (a compact vocabulary: ~10 MB) and later evaluations run one forward instead of two
/// (and load no weights).</summary>
public sealed class StageStart : IDisposable
{
    public const string Folder = "start",
        SamplesFile = "samples.json";
    public const long LogProbCacheBytes = 64L << 20;

    /// <summary>p_start's float64 log-probabilities per KL batch (keyed by its first row); null until the first KL
    /// is computed, and for good when they would not fit.</summary>
    internal Dictionary<int, Tensor>? LogProbs;
    internal bool Cacheable = true;

    /// <summary>How many KL batches have p_start's log-probabilities kept (0 before the first KL is computed).
    /// </summary>
    public int KeptLogProbBatches => LogProbs?.Count ?? 0;

    /// <summary>One completion per held-out prompt, sampled from p_start (model vocabulary ids).</summary>
    public IReadOnlyList<int[]> Completions { get; }
    readonly string? weightsDir;
    readonly Qwen3ForCausalLM? resident;

    /// <summary>Per completion, each token's entropy under p_start as it was sampled (null for a snapshot written
    /// before they were recorded): the stage's first evaluation reports eval_entropy from these.</summary>
    public IReadOnlyList<double[]>? Entropies { get; private init; }

    /// <summary>p_start's fingerprint (EvalMemo.cs) when the evaluator memoizes and the snapshot was made from the
    /// model in hand; null otherwise.</summary>
    public string? Fingerprint { get; private init; }

    StageStart(IReadOnlyList<int[]> completions, string? weightsDir, Qwen3ForCausalLM? resident)
    {
        Completions = completions;
        this.weightsDir = weightsDir;
        this.resident = resident;
    }

    /// <summary>The stage's start snapshot in <paramref name="outDir"/>/start: written at step 0 from
    /// <paramref name="model"/> (weights only when <paramref name="resident"/>, a frozen copy of the start model the
    /// trainer keeps anyway, is null), read back on resume; null when a stage resumed past step 0 has none.</summary>
    public static StageStart? Prepare(
        string outDir,
        Qwen3ForCausalLM model,
        long step,
        Qwen3ForCausalLM? resident,
        Evaluator ev
    ) => Prepare(outDir, model, step, resident, ev, null);

    /// <param name="fingerprint">the trainer's fingerprint of <paramref name="model"/>, if it has one</param>
    internal static StageStart? Prepare(
        string outDir,
        Qwen3ForCausalLM model,
        long step,
        Qwen3ForCausalLM? resident,
        Evaluator ev,
        Func<string>? fingerprint
    )
    {
        var dir = Path.Combine(outDir, Folder);
        var samples = Path.Combine(dir, SamplesFile);
        // the start model is in hand only at step 0, and its samples are known to be its draw only when drawn now: a
        // snapshot read back has no fingerprint
        var fp = step == 0 && !File.Exists(samples) ? ev.Fingerprint(model, fingerprint) : null;
        if (!File.Exists(samples))
        {
            if (step > 0)
                return null;
            if (resident is null)
                Checkpoint.Save(model, dir);
            var drawn = ev.Sample(model, fp);
            AtomicFile.WriteAllText(
                samples,
                JsonSerializer.Serialize(
                    new { completions = drawn.Select(c => c.Tokens), entropies = drawn.Select(c => c.Entropies) }
                )
            );
        }
        using var doc = JsonDocument.Parse(File.ReadAllBytes(samples));
        var completions = doc
            .RootElement.GetProperty("completions")
            .EnumerateArray()
            .Select(a => a.EnumerateArray().Select(x => x.GetInt32()).ToArray())
            .ToList();
        var entropies = doc.RootElement.TryGetProperty("entropies", out var es)
            ? es.EnumerateArray().Select(a => a.EnumerateArray().Select(x => x.GetDouble()).ToArray()).ToList()
            : null;
        bool onDisk = File.Exists(Path.Combine(dir, Checkpoint.WeightsFile));
        if (!onDisk && resident is null)
            throw new WorkbookException($"{dir}: the stage-start snapshot has samples but no weights");
        return new StageStart(completions, onDisk ? dir : null, onDisk ? null : resident)
        {
            Entropies = entropies,
            Fingerprint = fp,
        };
    }

    public void Dispose()
    {
        if (LogProbs is not null)
            foreach (var t in LogProbs.Values)
                t.Dispose();
        LogProbs = null;
    }

    /// <summary>Runs <paramref name="f"/> with p_start: the trainer's frozen copy, or the weights loaded for this call
    /// and disposed after it.</summary>
    public T WithModel<T>(Qwen3ForCausalLM like, Func<Qwen3ForCausalLM, T> f)
    {
        if (resident is not null)
            return f(resident);
        using var m = Checkpoint.Load(weightsDir!, like.DType, like.Device);
        m.eval();
        return f(m);
    }
}
