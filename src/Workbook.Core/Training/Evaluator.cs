// Evaluation on held-out expert data, the quantities the paper tracks:
//  - eval_sft_loss: token-mean cross-entropy of the expert responses under the policy (the SFT loss);
//  - eval_rewards/<verifier>/mean: mean reward of the policy's own samples (temperature sampling with a fixed seed, so
//    two evaluations differ only because the policy differs), for every evaluation verifier (strict and lenient);
//  - eval_completions/mean_length;
//  - forgetting (Forgetting.cs): eval_kl_from_start (with the stage's start snapshot), eval_entropy on the evaluation's
//    own samples, and eval_other_task_sft_loss when another task's held-out data is attached (OtherTask).
using Workbook.Data;
using Workbook.Model;
using Workbook.Verifiers;

namespace Workbook.Training;

public sealed record EvalOptions
{
    public int MaxNewTokens { get; init; } = 64;
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; }
    public int GenerationBatchSize { get; init; } = 64;

    /// <summary>The most bytes one generation call's KV cache takes (rows × (longest prompt + max_new_tokens)): fewer
    /// rows than <see cref="GenerationBatchSize"/> per call when it would take more. A 0.6B model's float32 cache is
    /// about 80 MB a row at 256 new tokens, so 64 rows would be 5 GB beside the weights and AdamW's moments; a compact
    /// model's whole batch fits as before. The same seed gives the same samples for the same rows per call.</summary>
    public long GenerationCacheBytes { get; init; } = 1L << 30;
    public int MaxLength { get; init; } = 1024;
    public long Seed { get; init; } = 1234;

    /// <summary>Skip sampling (SFT loss only): for cheap evaluations inside SFT-only stages.</summary>
    public bool LossOnly { get; init; }

    /// <summary>Trainers keep the policy at the stage's start and log eval_kl_from_start at every evaluation
    /// (Forgetting.cs: one forward of two models per evaluation; the start weights on disk in &lt;stage&gt;/start
    /// unless the trainer's GRPO reference is that model).</summary>
    public bool KlFromStart { get; init; } = true;
}

public sealed class Evaluator
{
    readonly Codec codec;
    readonly IReadOnlyList<Example> examples;
    readonly IReadOnlyList<SftSequence> sequences;
    readonly IReadOnlyList<bool[]> answerMasks;
    readonly int[][] prompts;
    readonly IVerifier[] verifiers;
    public EvalOptions Options { get; }

    /// <summary>The held-out prompts (model vocabulary ids), in the examples' order.</summary>
    public IReadOnlyList<int[]> Prompts => prompts;

    /// <summary>Held-out examples of a task this stage does not train (forgetting_task): their SFT loss is logged as
    /// eval_other_task_sft_loss. Null = none.</summary>
    public IReadOnlyList<Example>? OtherTask
    {
        get;
        init
        {
            field = value;
            otherSequences = value?.Select(e => codec.Sft(e)).ToList();
        }
    }
    IReadOnlyList<SftSequence>? otherSequences;

    /// <summary>Repeated evaluations and draws of the same weights return the first one's numbers (EvalMemo.cs). Only
    /// on CPU, where the same inputs give the same numbers: the maker says so (ExperimentRunner does).</summary>
    public bool Memoize
    {
        get => memo is not null;
        init => memo = value ? new EvalMemo() : null;
    }
    readonly EvalMemo? memo;

    /// <summary>How many evaluations and draws the memo answered.</summary>
    public int MemoHits => memo?.Hits ?? 0;

    /// <summary>The model's fingerprint when this evaluator memoizes (else null).</summary>
    public string? Fingerprint(Qwen3ForCausalLM model) => Fingerprint(model, null);

    /// <param name="known">the trainer's fingerprint of the same weights, if it has one (internal: a wrong one would
    /// make the memo answer for other weights)</param>
    internal string? Fingerprint(Qwen3ForCausalLM model, Func<string>? known) =>
        memo is null ? null : known?.Invoke() ?? ModelFingerprint.Of(model);

    public Evaluator(Codec codec, IReadOnlyList<Example> examples, IVerifier[] verifiers, EvalOptions? options = null)
    {
        this.codec = codec;
        this.examples = examples;
        this.verifiers = verifiers;
        Options = options ?? new EvalOptions();
        sequences = examples.Select(e => codec.Sft(e)).ToList();
        answerMasks = examples.Select((e, i) => codec.AnswerMask(e, sequences[i])).ToList();
        prompts = examples.Select(codec.Prompt).ToArray();
    }

    /// <param name="start">the stage's start snapshot: adds eval_kl_from_start</param>
    /// <param name="atStart">the model is p_start (the stage's first evaluation): its samples are the
    /// snapshot's</param>
    public Dictionary<string, double> Run(
        Qwen3ForCausalLM model,
        bool lossOnly = false,
        StageStart? start = null,
        bool atStart = false
    ) => Run(model, lossOnly, start, atStart, null);

    /// <param name="fingerprint">the trainer's fingerprint of these weights, if it has one (else computed when the
    /// evaluator memoizes)</param>
    internal Dictionary<string, double> Run(
        Qwen3ForCausalLM model,
        bool lossOnly,
        StageStart? start,
        bool atStart,
        Func<string>? fingerprint
    )
    {
        var fp = Fingerprint(model, fingerprint);
        // a start snapshot without a fingerprint (read back on resume) keys nothing: its evaluations are computed
        var key =
            fp is null || (start is not null && start.Fingerprint is null)
                ? null
                : $"{fp}|{start?.Fingerprint}|{atStart && start is not null}|{lossOnly || Options.LossOnly}";
        if (key is not null && memo!.TryResult(key, out var known))
            return known;
        var m = Compute(model, lossOnly, start, atStart, fp);
        if (key is not null)
            memo!.AddResult(key, m);
        return m;
    }

    Dictionary<string, double> Compute(
        Qwen3ForCausalLM model,
        bool lossOnly,
        StageStart? start,
        bool atStart,
        string? fp
    )
    {
        var m = new Dictionary<string, double>();
        var split = examples.Any(e => e.Form.Length > 0) ? new SplitSums() : null;
        var (loss, acc, _, perSeq) = Losses.EvaluateSft(
            model,
            sequences,
            codec.PadId,
            Options.MaxLength,
            tokenNll: split is null ? null : (first, nll) => AddSplit(split, first, nll)
        );
        m["eval_sft_loss"] = loss;
        m["eval_sft_nll_per_response"] = perSeq; // the theorem's L_SFT: summed over a response's tokens
        m["eval_mean_token_accuracy"] = acc;
        if (split is not null)
            foreach (var (k, s) in split.Sums)
                m[$"eval_sft_nll/{k}"] = s / split.Counts[k];
        if (otherSequences is not null)
            m["eval_other_task_sft_loss"] = Losses
                .EvaluateSft(model, otherSequences, codec.PadId, Options.MaxLength)
                .Loss;
        if (start is not null)
            foreach (var (k, v) in atStart ? KlAtStart : KlFromStart(model, start))
                m[k] = v;
        if (lossOnly || Options.LossOnly)
            return m;
        var sums = new double[verifiers.Length];
        double length = 0;
        var labelRows = new List<(string, string)>(); // issue 12: accuracy and MCC (ClassificationMetrics)
        // the entropies come with the samples (the snapshot's too, unless it predates them: then a forward pass)
        var drawn =
            atStart && start is not null
                ? start.Entropies is { } es
                    ? start
                        .Completions.Select((t, i) => new Completion(t, [], false, null) { Entropies = es[i] })
                        .ToList()
                    : null
                : Sample(model, fp);
        var outs = drawn is null ? start!.Completions : drawn.Select(c => c.Tokens).ToList();
        for (int j = 0; j < outs.Count; j++)
        {
            var e = examples[j];
            var text = codec.Decode(outs[j]);
            length += outs[j].Length;
            labelRows.Add((text, e.Reference)); // issue 12
            for (int k = 0; k < verifiers.Length; k++)
                sums[k] += verifiers[k].Score(e.PromptText, text, e.Reference).Reward ?? 0;
        }
        for (int k = 0; k < verifiers.Length; k++)
            m[$"eval_rewards/{verifiers[k].Name}/mean"] = sums[k] / prompts.Length;
        m["eval_completions/mean_length"] = length / prompts.Length;
        if (verifiers.Any(v => v is LabelVerifier)) // issue 12: eval_accuracy/*, eval_mcc/* (strict, lenient)
            foreach (var (k, v) in ClassificationMetrics.LabelMetrics(labelRows))
                m[k] = v;
        foreach (var (k, v) in drawn is null ? EntropyOf(model, outs) : EntropyOf(drawn))
            m[k] = v;
        return m;
    }

    /// <summary>One completion per held-out prompt, sampled with the evaluation's settings and seed (so two calls
    /// differ only because the model differs).</summary>
    public List<Completion> Sample(Qwen3ForCausalLM model) => Sample(model, Fingerprint(model));

    /// <param name="fp">the model's fingerprint (<see cref="Fingerprint"/>), null: not memoized</param>
    public List<Completion> Sample(Qwen3ForCausalLM model, string? fp)
    {
        if (fp is not null && memo!.TryDraw(fp, out var known))
            return known;
        var drawn = Draw(model);
        if (fp is not null)
            memo!.AddDraw(fp, drawn);
        return drawn;
    }

    List<Completion> Draw(Qwen3ForCausalLM model)
    {
        var opt = Sampling() with { Entropies = true };
        using var rng = new TorchSharp.torch.Generator((ulong)Options.Seed);
        return GenerateInCalls(model, prompts, opt, rng);
    }

    /// <summary>Completions of <paramref name="batch"/>, in order, from generation calls of at most
    /// <see cref="GenerationRows"/> prompts each, drawing from <paramref name="rng"/> call after call.</summary>
    List<Completion> GenerateInCalls(
        Qwen3ForCausalLM model,
        IReadOnlyList<int[]> batch,
        GenerationOptions opt,
        TorchSharp.torch.Generator rng
    )
    {
        int rows = GenerationRows(model, Options.GenerationBatchSize);
        var all = new List<Completion>(batch.Count);
        for (int i = 0; i < batch.Count; i += rows)
            all.AddRange(Generation.Generate(model, batch.Skip(i).Take(rows).ToList(), opt, rng));
        return all;
    }

    /// <summary>Rows per generation call: at most <paramref name="batchSize"/>, and a KV cache for the longest
    /// held-out prompt within <see cref="EvalOptions.GenerationCacheBytes"/> (at least one row).</summary>
    public int GenerationRows(Qwen3ForCausalLM model, int batchSize)
    {
        long capacity = (prompts.Length == 0 ? 1 : prompts.Max(p => p.Length)) + Math.Max(1, Options.MaxNewTokens);
        long perRow = KVCache.Bytes(model.Config, model.DType, 1, capacity);
        return Losses.RowsWithin(Options.GenerationCacheBytes, perRow, batchSize);
    }

    /// <summary>At the stage's first evaluation the model is p_start, and KL(p_start ‖ p_start) is 0: computed, it
    /// was 0 exactly on the CPU (the same weights through the same kernels), at the cost of loading the start weights
    /// and two forwards of every held-out completion (about two minutes at 0.6B on this project's VM).</summary>
    static readonly Dictionary<string, double> KlAtStart = new()
    {
        ["eval_kl_from_start"] = 0,
        ["eval_kl_from_start_per_token"] = 0,
    };

    /// <summary>eval_kl_from_start (nats per response) and eval_kl_from_start_per_token: KL(p_start ‖ p_cur) on the
    /// completions p_start sampled (Forgetting.cs).</summary>
    public Dictionary<string, double> KlFromStart(Qwen3ForCausalLM model, StageStart start)
    {
        bool wasTraining = model.training;
        model.eval();
        if (start.LogProbs is null && start.Cacheable)
        {
            var (_, bytes) = Forgetting.KlBatches(model, prompts, start.Completions, Options.GenerationBatchSize);
            start.Cacheable = bytes <= StageStart.LogProbCacheBytes;
            if (start.Cacheable)
                start.LogProbs = [];
        }
        (double[] PerSequence, int[] Tokens) Kl(Qwen3ForCausalLM? p0) =>
            Forgetting.Kl(
                p0,
                model,
                prompts,
                start.Completions,
                codec.PadId,
                Options.Temperature,
                Options.GenerationBatchSize,
                start.LogProbs
            );
        var (kl, tokens) = start.LogProbs is { Count: > 0 } ? Kl(null) : start.WithModel(model, Kl);
        if (wasTraining)
            model.train();
        return new()
        {
            ["eval_kl_from_start"] = kl.Average(),
            ["eval_kl_from_start_per_token"] = kl.Sum() / Math.Max(1, tokens.Sum()),
        };
    }

    /// <summary>eval_entropy (nats per token) and eval_entropy_per_response from the entropies recorded while
    /// sampling (the same quantity as the forward pass below, within float rounding of the cached decode).</summary>
    static Dictionary<string, double> EntropyOf(IReadOnlyList<Completion> drawn) =>
        new()
        {
            ["eval_entropy"] = drawn.Sum(c => c.Entropies!.Sum()) / Math.Max(1, drawn.Sum(c => c.Tokens.Length)),
            ["eval_entropy_per_response"] = drawn.Average(c => c.Entropies!.Sum()),
        };

    /// <summary>eval_entropy (nats per token) and eval_entropy_per_response of the policy on its own samples.</summary>
    Dictionary<string, double> EntropyOf(Qwen3ForCausalLM model, IReadOnlyList<int[]> outs)
    {
        bool wasTraining = model.training;
        model.eval();
        var (h, tokens) = Forgetting.Entropy(
            model,
            prompts,
            outs,
            codec.PadId,
            Options.Temperature,
            Options.GenerationBatchSize
        );
        if (wasTraining)
            model.train();
        return new()
        {
            ["eval_entropy"] = h.Sum() / Math.Max(1, tokens.Sum()),
            ["eval_entropy_per_response"] = h.Average(),
        };
    }

    sealed class SplitSums
    {
        public readonly Dictionary<string, double> Sums = [];
        public readonly Dictionary<string, int> Counts = [];
    }

    /// <summary>The held-out SFT loss split by expert-response form and by span (nats per response of that form):
    /// eval_sft_nll/&lt;form&gt;/rationale and eval_sft_nll/&lt;form&gt;/answer (the answer span includes
    /// &lt;|im_end|&gt;), accumulated from one batch's per-position NLL [rows, T] (rows from
    /// <paramref name="first"/>).</summary>
    void AddSplit(SplitSums split, int first, TorchSharp.torch.Tensor nll)
    {
        long T = nll.shape[1];
        var v = nll.data<double>().ToArray();
        for (int r = 0; r < nll.shape[0]; r++)
        {
            var e = examples[first + r];
            var answer = answerMasks[first + r];
            double rat = 0,
                ans = 0;
            // position t predicts token t + 1
            for (int t = 0; t + 1 < Math.Min(T + 1, answer.Length); t++)
                if (answer[t + 1])
                    ans += v[r * T + t];
                else
                    rat += v[r * T + t];
            foreach (var (key, x) in new[] { ($"{e.Form}/rationale", rat), ($"{e.Form}/answer", ans) })
            {
                split.Sums[key] = split.Sums.GetValueOrDefault(key) + x;
                split.Counts[key] = split.Counts.GetValueOrDefault(key) + 1;
            }
        }
    }

    /// <summary>Per held-out prompt, how many of k samples of the policy earn reward 1 (the rollouts' sampling
    /// settings, seeded): the input of Theory.C1Predictor.</summary>
    public int[] SuccessCounts(Qwen3ForCausalLM model, IVerifier reward, int k, long seed) =>
        SuccessCounts(model, [reward], k, seed)[0];

    /// <summary><see cref="SuccessCounts(Qwen3ForCausalLM, IVerifier, int, long)"/> for several 0/1 rewards scored on
    /// the same samples: [reward][prompt]. Scoring draws nothing, so each row equals that reward's own call.</summary>
    public int[][] SuccessCounts(Qwen3ForCausalLM model, IReadOnlyList<IVerifier> rewards, int k, long seed) =>
        SuccessCounts(SamplesPerPrompt(model, k, seed), rewards);

    /// <summary>k samples of the policy per held-out prompt, decoded: [prompt][sample] (the rollouts' sampling
    /// settings, seeded: the same model, k and seed give the same texts).</summary>
    public string[][] SamplesPerPrompt(Qwen3ForCausalLM model, int k, long seed)
    {
        var opt = Sampling();
        using var rng = new TorchSharp.torch.Generator((ulong)seed);
        var texts = new string[prompts.Length][];
        int rows = GenerationRows(model, Options.GenerationBatchSize);
        if (k > rows) // a prompt's k samples over several calls of at most `rows` rows (the KV budget)
        {
            for (int j = 0; j < prompts.Length; j++)
                texts[j] = GenerateInCalls(model, Enumerable.Repeat(prompts[j], k).ToList(), opt, rng)
                    .Select(o => codec.Decode(o.Tokens))
                    .ToArray();
            return texts;
        }
        int per = rows / k;
        for (int i = 0; i < prompts.Length; i += per)
        {
            var idx = Enumerable.Range(i, Math.Min(per, prompts.Length - i)).ToList();
            var outs = Generation.Generate(
                model,
                idx.SelectMany(j => Enumerable.Repeat(prompts[j], k)).ToList(),
                opt,
                rng
            );
            for (int a = 0; a < idx.Count; a++)
                texts[idx[a]] = Enumerable.Range(0, k).Select(b => codec.Decode(outs[a * k + b].Tokens)).ToArray();
        }
        return texts;
    }

    /// <summary>Per held-out prompt, how many of its <paramref name="samples"/> earn 1 under each 0/1 reward:
    /// [reward][prompt].</summary>
    public int[][] SuccessCounts(IReadOnlyList<string[]> samples, IReadOnlyList<IVerifier> rewards)
    {
        if (samples.Count != examples.Count)
            throw new ArgumentException($"success counts: {samples.Count} prompts' samples for {examples.Count}");
        var counts = rewards.Select(_ => new int[examples.Count]).ToArray();
        for (int p = 0; p < examples.Count; p++)
        {
            var e = examples[p];
            foreach (var text in samples[p])
                for (int v = 0; v < rewards.Count; v++)
                {
                    var r = rewards[v].Score(e.PromptText, text, e.Reference).Reward ?? 0;
                    if (r is not (0 or 1))
                        throw new WorkbookException($"success counts need a 0/1 reward; {rewards[v].Name} gave {r}");
                    if (r == 1)
                        counts[v][p]++;
                }
        }
        return counts;
    }

    /// <summary>Mean reward of the held-out expert responses under a verifier.</summary>
    public double ExpertReward(IVerifier reward) =>
        examples.Average(e => reward.Score(e.PromptText, e.Expert, e.Reference).Reward ?? 0);

    /// <summary>How evaluations sample: the evaluation options' settings, stopping at &lt;|im_end|&gt;.</summary>
    GenerationOptions Sampling() =>
        GenerationOptions.Sampling(
            Options.MaxNewTokens,
            Options.Temperature,
            Options.TopP,
            Options.TopK,
            [codec.EosId],
            codec.PadId
        );

    /// <summary>A few decoded samples (for logs and reports).</summary>
    public List<(string Prompt, string Completion, string Reference)> Samples(Qwen3ForCausalLM model, int n, long seed)
    {
        var opt = Sampling(); // top_p and top_k too: the samples show what the evaluation draws
        using var rng = new TorchSharp.torch.Generator((ulong)seed);
        var outs = GenerateInCalls(model, prompts.Take(n).ToList(), opt, rng); // one call when n fits, as before
        return outs.Select((o, i) => (examples[i].PromptText, codec.Decode(o.Tokens), examples[i].Reference)).ToList();
    }
}
