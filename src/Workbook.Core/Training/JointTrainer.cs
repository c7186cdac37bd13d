// The "joint" baseline: one objective, L = L_SFT + λ·L_GRPO, at every step. Every step takes an SFT batch; every
// `rl_every`-th step also samples a GRPO batch, so a joint run of N_sft steps with rl_every = N_sft/N_rl sees the same
// data and rollouts as the two-stage pipelines (N_sft SFT steps + N_rl GRPO steps). The GRPO term has the same frozen
// reference (the policy at the stage's start), β and kl_mode as the GRPO stages of the other pipelines.
// 1. rl_optimizer = separate (default): each term has its own AdamW, as in the two-stage pipelines. Both gradients are
//    taken at the same weights; the SFT term steps at learning_rate, the GRPO term at grpo's learning rate and schedule
//    counted in RL steps, with grpo's clipping, betas and weight decay. λ must be 1: Adam is invariant to a loss's
//    scale, so a weight would change almost nothing (set grpo.learning_rate instead).
// 2. rl_optimizer = shared: one AdamW on the gradient of L_SFT + λ·L_GRPO at learning_rate (the GRPO term then moves
//    at the SFT rate).
using System.Diagnostics;
using Workbook.Data;
using Workbook.Model;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Training;

public sealed record JointOptions : TrainOptions
{
    public SftOptions Sft { get; init; } = new();
    public GrpoOptions Grpo { get; init; } = new();

    /// <summary>λ: weight of the GRPO loss.</summary>
    public double RlWeight { get; init; } = 1.0;

    /// <summary>Add the GRPO loss every N steps.</summary>
    public int RlEvery { get; init; } = 1;

    /// <summary>separate: the GRPO term has its own AdamW with grpo's learning rate, schedule (over the RL steps),
    /// clipping, betas, epsilon and weight decay; shared: one AdamW on L_SFT + λ·L_GRPO at learning_rate.</summary>
    public string RlOptimizer { get; init; } = "separate";

    /// <summary>The GRPO term's steps in a stage: the steps where step % rl_every == 0.</summary>
    public long RlSteps => (MaxSteps + RlEvery - 1) / RlEvery;

    /// <summary>What is wrong with rl_weight and rl_optimizer, as (field, why), or null. The experiment config checks
    /// its joint_rl_weight and joint_rl_optimizer with it too (prefix "joint_"), so its errors name its own keys.
    /// </summary>
    public static (string Field, string Why)? RlProblem(double weight, string optimizer, string prefix = "")
    {
        string w = prefix + "rl_weight",
            o = prefix + "rl_optimizer";
        if (weight < 0)
            return (w, "must be >= 0");
        if (optimizer is not ("separate" or "shared"))
            return (o, $"'{optimizer}' is not separate or shared");
        if (optimizer == "separate" && weight != 1)
            return (
                w,
                $"{weight} with {o}=separate: the GRPO term has its own AdamW, which is invariant to the loss's "
                    + $"scale, so a weight would change almost nothing; set grpo.learning_rate instead (or {o}=shared)"
            );
        return null;
    }

    public override void Validate()
    {
        base.Validate();
        Sft.Validate();
        Grpo.Validate();
        if (RlProblem(RlWeight, RlOptimizer) is var (field, why))
            Fail(field, why);
        if (RlEvery < 1)
            Fail("rl_every", "must be >= 1");
        if (Sft.GradientCheckpointing is not null || Grpo.GradientCheckpointing is not null)
            Fail(
                Sft.GradientCheckpointing is not null ? "sft.gradient_checkpointing" : "grpo.gradient_checkpointing",
                "one model trains both terms: set the top-level gradient_checkpointing instead"
            );
        if (Grpo.SftCoef > 0) // the joint objective has its own SFT term; GrpoTrainer's would be dropped here
            Fail("grpo.sft_coef", "the joint trainer's SFT term is L_SFT itself; leave grpo.sft_coef at 0");
    }
}

public sealed class JointTrainer : TrainerBase<JointOptions>
{
    readonly Codec codec;
    readonly IReadOnlyList<Example> train;
    readonly List<SftSequence> data;
    readonly int[][] promptIds;
    readonly WeightedReward reward;
    DataOrder rlOrder = null!;
    Qwen3ForCausalLM? reference;
    AdamW? rlOptimizer;

    /// <summary>The GRPO term's own AdamW (rl_optimizer = separate), sharing the main one's float32 master copies of
    /// bf16 weights; checkpointed beside it.</summary>
    protected override IReadOnlyList<(string File, AdamW Optimizer)> MoreOptimizers()
    {
        if (Opt.RlOptimizer != "separate")
            return [];
        var g = Opt.Grpo;
        rlOptimizer = new AdamW(
            Model.named_parameters(),
            g.AdamBeta1,
            g.AdamBeta2,
            g.AdamEpsilon,
            g.WeightDecay,
            shareMasterWith: Optimizer
        );
        return [(RlOptimizerFile, rlOptimizer)];
    }

    public const string RlOptimizerFile = "optimizer-grpo.safetensors";

    /// <summary>The reference is the policy at the stage's start (β &gt; 0): eval_kl_from_start reuses it.</summary>
    protected override Qwen3ForCausalLM? StartModel => reference;

    protected override string TrainerName => "joint";
    protected override int DatasetSize => data.Count;

    public JointTrainer(
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> train,
        IVerifier verifier,
        JointOptions options,
        string outDir,
        Evaluator? evaluator = null
    )
        : base(model, options, outDir, evaluator)
    {
        this.codec = codec;
        this.train = train;
        data = train.Select(e => codec.Sft(e, options.Sft.CompletionOnlyLoss)).ToList();
        promptIds = train.Select(codec.Prompt).ToArray();
        reward = new WeightedReward([(verifier, 1.0)]);
        Memory.ForVariableShapes(model.ParameterCount()); // rollouts: see Util/Memory.cs, item 2
    }

    protected override void OnResume()
    {
        // the RL prompt order is a second stream over the same rows; its position is a function of the step: steps
        // 0, rl_every, 2·rl_every, ... below State.Step each drew one RL batch
        long rlSteps = (State.Step + Opt.RlEvery - 1) / Opt.RlEvery;
        rlOrder = new DataOrder(train.Count, Opt.Seed + 1);
        rlOrder.Next((int)(rlSteps * (Opt.Grpo.PerDeviceTrainBatchSize / Opt.Grpo.NumGenerations)));
        reference = GrpoTrainer.LoadReference(Model, OutDir, Opt.Grpo, State.Step);
    }

    protected override Dictionary<string, double> TrainStep(long step, double lr)
    {
        Optimizer.ZeroGrad();
        var m = new Dictionary<string, double>();
        // the SFT term: sft.gradient_accumulation_steps micro-batches, token mean over all of them (as SftTrainer)
        var picks = Enumerable
            .Range(0, Opt.Sft.GradientAccumulationSteps)
            .Select(_ => Order.Next(Opt.Sft.PerDeviceTrainBatchSize))
            .ToList();
        long tokens = Math.Max(1, picks.Sum(rows => rows.Sum(i => Losses.LossTokens(data[i], Opt.Sft.MaxLength))));
        double nll = 0,
            correct = 0;
        foreach (var rows in picks)
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            using var forBackward = Model.ForBackward();
            var batch = Losses.MakeSftBatch(
                rows.Select(i => data[i]).ToList(),
                codec.PadId,
                Opt.Sft.MaxLength,
                Opt.Sft.Packing
            );
            var (s, c) = Losses.SftNll(Model, batch);
            s.Over(tokens).backward();
            nll += s.Value();
            correct += c.Value();
        }
        double total = nll / tokens;
        m["sft_loss"] = total;
        m["mean_token_accuracy"] = correct / tokens;
        double rlLr = 0;
        Tensor?[]? rlGrads = null;
        if (step % Opt.RlEvery == 0)
        {
            // separate: the GRPO term's gradient gets its own slot, taken at the same weights as the SFT term's
            var sftGrads = rlOptimizer?.TakeGrads();
            var rl = GrpoBatch.GenerateAndScore(
                Model,
                reference,
                codec,
                train,
                promptIds,
                reward,
                Opt.Grpo with
                {
                    Seed = Opt.Seed,
                },
                rlOrder,
                step
            );
            var acc = new GrpoBatch.Accumulator();
            var sw = Stopwatch.StartNew();
            var (lv, _) = rl.Backward(Model, acc, (share, _) => share.Times(Opt.RlWeight));
            foreach (var (k, v) in rl.Metrics)
                m[k] = v;
            foreach (var (k, v) in acc.Means())
                m[k] = v;
            m["grpo_loss"] = lv;
            m["timing/update"] = sw.Elapsed.TotalSeconds;
            total += Opt.RlWeight * lv;
            if (rlOptimizer is not null)
            {
                long k = step / Opt.RlEvery,
                    warm = (long)Math.Ceiling(Opt.Grpo.WarmupRatio * Opt.RlSteps);
                rlLr = LrSchedule.At(Opt.Grpo.LrSchedulerType, Opt.Grpo.LearningRate, k, Opt.RlSteps, warm);
                m["grpo_grad_norm"] = ClipAndCheck(rlOptimizer, Opt.Grpo.MaxGradNorm, lv, step, "grpo_");
                rlGrads = rlOptimizer.TakeGrads();
                rlOptimizer.PutGrads(sftGrads!);
                m["grpo_learning_rate"] = rlLr;
            }
        }
        m["loss"] = total;
        m["grad_norm"] = Update(lr, total, step); // separate: the SFT term's; both were checked before either steps
        if (rlGrads is not null)
        {
            rlOptimizer!.PutGrads(rlGrads);
            rlOptimizer.StepWith(rlLr);
        }
        return m;
    }
}
