// Group Relative Policy Optimization, following TRL's GRPOTrainer:
//  1. rollout: for each of per_device_train_batch_size / G prompts, sample G completions with the KV cache
//     (temperature / top-p / top-k, stop at <|im_end|>, cut at max_completion_length), seeded from (seed, step);
//  2. reward = the weighted verifiers on the decoded completion; advantage = reward - group mean, divided by the group's
//     (or batch's) std + 1e-4 unless scale_rewards = none;
//  3. per-token loss -min(ρA, clip(ρ, 1-ε, 1+ε_high)·A) + β·KL_k3(π‖π_ref), ρ = π/π_old (≡ 1 when num_iterations = 1),
//     aggregated per loss_type (grpo: per-sequence mean; dr_grpo: sum / (N·max_completion_length); dapo/bnpo: token mean);
//  4. num_iterations optimizer steps reuse the same rollouts. The reference is the policy as GRPO started (β > 0 only).
using System.Diagnostics;
using Workbook.Data;
using Workbook.Model;
using Workbook.Theory;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Training;

public sealed class GrpoTrainer : TrainerBase<GrpoOptions>
{
    readonly Codec codec;
    readonly IReadOnlyList<Example> prompts;
    readonly int[][] promptIds;
    readonly WeightedReward reward;
    Qwen3ForCausalLM? reference;

    protected override string TrainerName => "grpo";
    protected override int DatasetSize => prompts.Count;

    public GrpoTrainer(Qwen3ForCausalLM model, Codec codec, IReadOnlyList<Example> prompts, WeightedReward reward, GrpoOptions options, string outDir, Evaluator? evaluator = null)
        : base(model, options, outDir, evaluator)
    {
        this.codec = codec; this.prompts = prompts; this.reward = reward;
        promptIds = prompts.Select(codec.Prompt).ToArray();
    }

    public GrpoTrainer(Qwen3ForCausalLM model, Codec codec, IReadOnlyList<Example> prompts, IVerifier verifier, GrpoOptions options, string outDir, Evaluator? evaluator = null)
        : this(model, codec, prompts, new WeightedReward([(verifier, 1.0)]), options, outDir, evaluator) { }

    protected override void OnResume()
    {
        if (Opt.Beta <= 0) return;
        // the reference is the policy at GRPO's start, kept on disk so that a resumed run uses the same one
        var refDir = Path.Combine(OutDir, "reference");
        if (State.Step == 0 && !File.Exists(Path.Combine(refDir, Checkpoint.WeightsFile))) Checkpoint.Save(Model, refDir);
        reference = Checkpoint.Load(refDir, Model.DType, Model.Device);
        reference.eval();
        foreach (var p in reference.parameters()) p.requires_grad = false;
    }

    /// <summary>cos(∇J, −∇L_SFT) and the norms, from this step's rollouts and an expert batch drawn from (seed, step), and
    /// the spectral concentration of the per-example gradients that sum to the two (Theory/Spectral.cs). ∇J is −∇ of the
    /// GRPO loss.</summary>
    Dictionary<string, double> GradientAlignment(GrpoRollout batch, long step)
    {
        var rng = new Random(unchecked((int)(Opt.Seed * 31 + step)));
        var expert = Enumerable.Range(0, Opt.GradientAlignmentExamples).Select(_ => codec.Sft(prompts[rng.Next(prompts.Count)])).ToList();
        var (sftParts, rlParts) = GradientPieces(Model, expert, codec.PadId, batch);   // autograd.grad: .grad untouched
        var s = Spectral.Estimate(sftParts, rlParts, seed: (int)step);
        // −∇L_SFT is the SFT descent direction: cos(∇J, −∇L_SFT) = cos(∇loss_rl, ∇L_SFT)
        return new()
        {
            ["diagnostics/cos_rl_sft"] = s.Cos,
            ["diagnostics/sft_grad_norm"] = Curvature.Norm(Curvature.Sum(sftParts)),
            ["diagnostics/rl_grad_norm"] = Curvature.Norm(Curvature.Sum(rlParts)),
            ["diagnostics/spectral_top_fraction"] = s.TopFraction,
            ["diagnostics/spectral_epsilon"] = s.Epsilon,
            ["diagnostics/cos_bound"] = s.CosBound,
        };
    }

    /// <summary>Per-example gradients that sum exactly to ∇L_SFT (token mean over the expert batch) and to ∇(GRPO loss):
    /// one per expert example and one per rollout sequence, each with the batch's normalisers (public for tests).</summary>
    public static (List<double[]> Sft, List<double[]> Rl) GradientPieces(Qwen3ForCausalLM model, IReadOnlyList<SftSequence> expert, int padId, GrpoRollout batch)
    {
        long sftTokens = Losses.MakeSftBatch(expert, padId, 4096, packing: false).Tokens;
        var sft = new List<double[]>(); var rl = new List<double[]>();
        foreach (var e in expert)
        {
            var one = Losses.MakeSftBatch([e], padId, 4096, packing: false);
            sft.Add(Curvature.Gradient(model, () => Losses.SftNll(model, one).NllSum / Math.Max(1, sftTokens)).Grad);
        }
        for (long j = 0; j < batch.Sequences; j++)
            rl.Add(Curvature.Gradient(model, () => batch.Loss(model, new GrpoRollout.Accumulator(), [j])).Grad);
        return (sft, rl);
    }

    /// <summary>The flattened parameter gradients of two losses (public for tests).</summary>
    public static (double[] A, double[] B) GradientPair(Qwen3ForCausalLM model, Func<Tensor> lossA, Func<Tensor> lossB) =>
        (Curvature.Gradient(model, lossA).Grad, Curvature.Gradient(model, lossB).Grad);

    /// <summary>Group-relative advantages (public for tests).</summary>
    public static double[] Advantages(double[] rewards, int groupSize, string scale)
    {
        int n = rewards.Length;
        var adv = new double[n];
        double batchMean = rewards.Average();
        double batchStd = Std(rewards, batchMean);
        for (int g = 0; g < n / groupSize; g++)
        {
            var grp = rewards.Skip(g * groupSize).Take(groupSize).ToArray();
            double mean = grp.Average(), std = Std(grp, mean);
            for (int i = 0; i < groupSize; i++)
            {
                double a = grp[i] - mean;
                adv[g * groupSize + i] = scale switch { "group" => a / (std + 1e-4), "batch" => a / (batchStd + 1e-4), _ => a };
            }
        }
        return adv;
    }

    /// <summary>Sample standard deviation (torch.std's default, as TRL uses).</summary>
    static double Std(double[] x, double mean) => x.Length < 2 ? 0 : Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Length - 1));
    internal static double Std(double[] x) => Std(x, x.Average());

    /// <summary>The GRPO loss of one batch (public for the gradient tests).</summary>
    /// <param name="batchSequences">With <paramref name="batchTokens"/>: the normalisers of the whole batch when these rows are
    /// a slice of it, so that the slices' losses sum to the batch loss (default: the rows are the batch).</param>
    public static (Tensor Loss, Tensor PerToken, Tensor? Kl) Loss(Tensor logps, Tensor oldLogps, Tensor? refLogps, Tensor advantages, Tensor completionMask, GrpoOptions o,
        long? batchSequences = null, Tensor? batchTokens = null)
    {
        using var scope = NewDisposeScope();
        var ratio = (logps - oldLogps).exp();
        var a = advantages.unsqueeze(1);
        var clipped = ratio.clamp(1 - o.Epsilon, 1 + (o.EpsilonHigh ?? o.Epsilon));
        var perTok = -minimum(ratio * a, clipped * a);
        Tensor? kl = null;
        if (o.Beta > 0 && refLogps is not null)
        {
            var d = refLogps - logps;
            kl = d.exp() - d - 1;
            perTok = perTok + o.Beta * kl;
        }
        var cm = completionMask;
        long n = batchSequences ?? cm.shape[0];
        var loss = o.LossType switch
        {
            "grpo" => batchSequences is null ? ((perTok * cm).sum(1) / cm.sum(1).clamp_min(1)).mean() : ((perTok * cm).sum(1) / cm.sum(1).clamp_min(1)).sum() / n,
            "dr_grpo" => (perTok * cm).sum() / (n * (double)o.MaxCompletionLength),
            _ => (perTok * cm).sum() / (batchTokens ?? cm.sum()).clamp_min(1),
        };
        return (loss.MoveToOuterDisposeScope(), perTok.MoveToOuterDisposeScope(), kl?.MoveToOuterDisposeScope());
    }

    protected override Dictionary<string, double> TrainStep(long step, double lr)
    {
        var batch = GrpoRollout.Sample(Model, reference, codec, prompts, promptIds, reward, Opt, Order, step);
        var m = batch.Metrics;
        if (Opt.GradientAlignmentSteps > 0 && step % Opt.GradientAlignmentSteps == 0)
            foreach (var (k, v) in GradientAlignment(batch, step)) m[k] = v;
        var sw = Stopwatch.StartNew();
        var acc = new GrpoRollout.Accumulator();
        for (int it = 0; it < Opt.NumIterations; it++)
        {
            Optimizer.ZeroGrad();
            var loss = batch.Loss(Model, acc);
            loss.backward();
            var lv = loss.Value();
            acc.Add("loss", lv);
            acc.Add("grad_norm", Update(lr, lv, step));
        }
        foreach (var (k, v) in acc.Means()) m[k] = v;
        m["timing/update"] = sw.Elapsed.TotalSeconds;
        State = State with { NumTokens = State.NumTokens + batch.Tokens };
        m["num_tokens"] = State.NumTokens;
        return m;
    }
}

/// <summary>One batch of rollouts: sampled completions, rewards, advantages and the tensors the loss needs.</summary>
public sealed class GrpoRollout
{
    public Dictionary<string, double> Metrics { get; } = new();
    public long Tokens { get; private set; }
    Tensor ids = null!, mask = null!, cm = null!, adv = null!;
    Tensor? old, refLp;
    int promptLength;
    GrpoOptions opt = null!;

    /// <summary>Running means of per-iteration metrics.</summary>
    public sealed class Accumulator
    {
        readonly Dictionary<string, (double sum, int n)> d = new();
        public void Add(string k, double v) { d.TryGetValue(k, out var x); d[k] = (x.sum + v, x.n + 1); }
        public IEnumerable<(string, double)> Means() => d.Select(kv => (kv.Key, kv.Value.sum / kv.Value.n));
    }

    public static GrpoRollout Sample(Qwen3ForCausalLM model, Qwen3ForCausalLM? reference, Codec codec, IReadOnlyList<Example> prompts,
        int[][] promptIds, WeightedReward reward, GrpoOptions o, DataOrder order, long step)
    {
        var r = new GrpoRollout { opt = o };
        var m = r.Metrics;
        int G = o.NumGenerations, nPrompts = o.PerDeviceTrainBatchSize / G;

        // 1. rollout
        var sw = Stopwatch.StartNew();
        var idx = order.Next(nPrompts);
        var expanded = idx.SelectMany(i => Enumerable.Repeat(promptIds[i], G)).ToList();
        var genOpt = new GenerationOptions
        {
            MaxNewTokens = o.MaxCompletionLength, Temperature = o.Temperature, TopP = o.TopP, TopK = o.TopK,
            EosTokenIds = [codec.EosId], PadTokenId = codec.PadId,
        };
        List<Completion> outs;
        using (var rng = new Generator((ulong)(o.Seed * 1_000_003 + step)))
            outs = Generation.Generate(model, expanded, genOpt, rng);
        model.train();
        m["timing/rollout"] = sw.Elapsed.TotalSeconds;

        // 2. rewards and advantages
        int N = outs.Count;
        var total = new double[N];
        var per = new double[reward.Parts.Count, N];
        for (int j = 0; j < N; j++)
        {
            var e = prompts[idx[j / G]];
            var (t, each) = reward.Score(e.PromptText, codec.Decode(outs[j].Tokens), e.Reference);
            total[j] = t;
            for (int k = 0; k < each.Length; k++) per[k, j] = each[k].Reward ?? 0;
        }
        var adv = GrpoTrainer.Advantages(total, G, o.ScaleRewards);
        double[] groupStd = Enumerable.Range(0, nPrompts).Select(g => GrpoTrainer.Std(total.Skip(g * G).Take(G).ToArray())).ToArray();
        m["reward"] = total.Average();
        m["reward_std"] = groupStd.Average();
        m["frac_reward_zero_std"] = groupStd.Count(s => s < 1e-8) / (double)nPrompts;
        for (int k = 0; k < reward.Parts.Count; k++)
        {
            var x = Enumerable.Range(0, N).Select(j => per[k, j]).ToArray();
            m[$"rewards/{reward.Parts[k].Verifier.Name}/mean"] = x.Average();
            m[$"rewards/{reward.Parts[k].Verifier.Name}/std"] = GrpoTrainer.Std(x);
        }
        var lens = outs.Select(c => c.Tokens.Length).ToArray();
        m["completions/mean_length"] = lens.Average();
        m["completions/min_length"] = lens.Min();
        m["completions/max_length"] = lens.Max();
        m["completions/clipped_ratio"] = outs.Count(c => c.Truncated) / (double)N;
        var term = outs.Where(c => !c.Truncated).Select(c => c.Tokens.Length).ToArray();
        m["completions/mean_terminated_length"] = term.Length > 0 ? term.Average() : 0;
        m["tokens_per_second"] = lens.Sum() / Math.Max(1e-9, m["timing/rollout"]);

        // 3. sequences: left-padded prompt | right-padded completion
        int P = expanded.Max(p => p.Length), C = Math.Max(1, lens.Max()), L = P + C;
        var ids = new long[N * L]; var mask = new long[N * L]; var cm = new float[N * C];
        for (int j = 0; j < N; j++)
        {
            var p = expanded[j]; int off = P - p.Length;
            for (int t = 0; t < P; t++) { ids[j * L + t] = t < off ? codec.PadId : p[t - off]; mask[j * L + t] = t < off ? 0 : 1; }
            var c = outs[j].Tokens;
            bool keep = !(o.MaskTruncatedCompletions && outs[j].Truncated);
            for (int t = 0; t < C; t++)
            {
                bool real = t < c.Length;
                ids[j * L + P + t] = real ? c[t] : codec.PadId;
                mask[j * L + P + t] = real ? 1 : 0;
                cm[j * C + t] = real && keep ? 1 : 0;
            }
        }
        r.promptLength = P;
        r.Tokens = mask.Sum();
        r.ids = tensor(ids, [N, L]);
        r.mask = tensor(mask, [N, L]);
        r.cm = tensor(cm, [N, C]).to(model.Device);
        r.adv = tensor(adv.Select(a => (float)a).ToArray()).to(model.Device);
        using (no_grad())
        {
            if (o.NumIterations > 1) r.old = Losses.CompletionLogProbs(model, r.ids, r.mask, P, o.Temperature).LogProbs;
            if (reference is not null) r.refLp = Losses.CompletionLogProbs(reference, r.ids, r.mask, P, o.Temperature).LogProbs;
        }
        return r;
    }

    /// <summary>The GRPO loss of this batch under the current policy; adds entropy, kl and clip metrics to the accumulator.</summary>
    /// <summary>Sequences in the batch.</summary>
    public long Sequences => ids.shape[0];

    /// <summary>The GRPO loss of this batch under the current policy; adds entropy, kl and clip metrics to the accumulator.
    /// With <paramref name="rows"/>: those rows' share of the batch loss (the shares of a partition sum to the loss).</summary>
    public Tensor Loss(Qwen3ForCausalLM model, Accumulator acc, long[]? rows = null)
    {
        Tensor Pick(Tensor t) => rows is null ? t : t.index_select(0, tensor(rows, device: t.device));
        Tensor ids = Pick(this.ids), mask = Pick(this.mask), cm = Pick(this.cm), adv = Pick(this.adv);
        Tensor? old = this.old is null ? null : Pick(this.old), refLp = this.refLp is null ? null : Pick(this.refLp);
        var (lp, entropy) = Losses.CompletionLogProbs(model, ids, mask, promptLength, opt.Temperature);
        var oldLp = old ?? lp.detach();
        var (loss, _, kl) = rows is null ? GrpoTrainer.Loss(lp, oldLp, refLp, adv, cm, opt)
            : GrpoTrainer.Loss(lp, oldLp, refLp, adv, cm, opt, this.ids.shape[0], this.cm.sum());
        using (no_grad())
        {
            double denom = Math.Max(1, cm.sum().Value());
            acc.Add("entropy", (entropy * cm).sum().Value() / denom);
            if (kl is not null) acc.Add("kl", (kl * cm).sum().Value() / denom);
            var ratio = (lp - oldLp).exp();
            var a = adv.unsqueeze(1);
            var isLow = ratio.lt(1 - opt.Epsilon) & a.lt(0);
            var isHigh = ratio.gt(1 + (opt.EpsilonHigh ?? opt.Epsilon)) & a.gt(0);
            acc.Add("clip_ratio/low_mean", (isLow.to(cm.dtype) * cm).sum().Value() / denom);
            acc.Add("clip_ratio/high_mean", (isHigh.to(cm.dtype) * cm).sum().Value() / denom);
            acc.Add("clip_ratio/region_mean", ((isLow | isHigh).to(cm.dtype) * cm).sum().Value() / denom);
        }
        return loss;
    }
}
