// Group Relative Policy Optimization, following TRL's GRPOTrainer. One step, top to bottom:
// 1. generate and score (GrpoBatch.GenerateAndScore): for per_device_train_batch_size / G prompts, sample G completions
//     with the KV cache (temperature / top-p / top-k, stop at <|im_end|>, cut at max_completion_length), seeded from
//     (seed, step); reward = the weighted verifiers on the decoded completion. The result is one record of tensors.
//  2. KL placement (kl_mode): `loss` (TRL) adds β·k3(π‖π_ref) per token to the loss; `reward` (verl's use_kl_in_reward)
//     subtracts β·Σ_t log(π/π_ref) from each sequence's reward instead, so the objective is E[r] − β·KL(π‖π_ref), whose
//     optimum is Theorem 3.1's p* ∝ π_ref·e^{r/β}. The reference is the policy as GRPO started (β > 0 only).
//  3. advantages: reward − group mean, divided by the group's (or batch's) std + 1e-4 unless scale_rewards = none
//     (kl_mode = reward requires none: dividing by a sampled std moves the fixed point).
//  4. one loss function (GrpoTrainer.Loss) makes the loss and every clip/KL metric from the same tensors: per token
//     −min(ρA, clip(ρ, 1−ε, 1+ε_high)·A) [+ β·k3], ρ = π/π_old (≡ 1 when num_iterations = 1), aggregated per loss_type
//     (grpo: per-sequence mean; dr_grpo: sum / (N·max_completion_length); dapo/bnpo: token mean).
// 5. num_iterations = μ optimizer steps reuse the same rollouts. Unlike TRL, max_steps counts rollout batches, so a run
//     makes μ·max_steps optimizer steps (TRL's max_steps counts optimizer steps).
//  6. SFT term (sft_coef > 0; off by default): each optimizer step also takes sft_batch_size expert sequences from the
//     training examples (own DataOrder, seed + 1, so a resumed stage draws the same ones) and the loss becomes
//     L_GRPO + λ·L_SFT (sft_mix = add: InstructGPT's ptx) or (1 − μ)·L_GRPO + μ·L_SFT (convex: CHORD-μ), L_SFT being
//     SftTrainer's token-mean completion-only NLL and λ or μ scheduled over the stage (sft_coef → sft_coef_min).
//  7. off-policy expert (off_policy_expert; LUFFY): each group is G − 1 samples plus the prompt's expert response, so
//     advantages are relative to the mixed group; the expert's tokens use the ratio π_θ (or π_θ/(π_θ + γ) with
//     shaping), unclipped and without KL (the KL term, either kl_mode, covers on-policy tokens only).
// Each group's prompt goes through the model once, in the rollout's prefill and in the training forwards (π_old, the
// reference, the loss), and its keys and values serve the group's rows (shared_prompt_forward; Model/SharedPrefix.cs).
// Diagnostics that need more than the batch (the gradient alignment of Theory/GradientAlignment.cs) attach through
// BeforeUpdate, so Training does not depend on Theory.
using System.Diagnostics;
using Workbook.Data;
using Workbook.Model;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Training;

/// <summary>A GRPO stage whose first steps had zero reward variance in every group: no learning signal.</summary>
public sealed class NoRewardSignalException(int steps, double reward, string verifier)
    : WorkbookException(
        $"no reward signal: in each of the first {steps} GRPO steps every group of completions had the same reward "
            + $"(frac_reward_zero_std = 1; mean reward {reward:0.###} under {verifier}), so every advantage is 0 and "
            + "RL does nothing. Run SFT first (train sft, then train grpo --model <its checkpoint>), add a format "
            + "instruction to the prompt, allow longer completions (max_completion_length), or set zero_signal_steps=0 "
            + "to train anyway"
    )
{
    public int Steps { get; } = steps;
}

/// <summary>The loss of one GRPO batch and the tensors its metrics come from.</summary>
public sealed record GrpoLoss(Tensor Loss, Tensor PerToken, Tensor? Kl, Tensor Ratio, Tensor IsLow, Tensor IsHigh)
{
    public void Deconstruct(out Tensor loss, out Tensor perToken, out Tensor? kl) =>
        (loss, perToken, kl) = (Loss, PerToken, Kl);
}

public sealed class GrpoTrainer : TrainerBase<GrpoOptions>
{
    readonly Codec codec;
    readonly IReadOnlyList<Example> prompts;
    readonly int[][] promptIds;
    readonly WeightedReward reward;
    Qwen3ForCausalLM? reference;
    List<SftSequence>? sftData;
    DataOrder? sftOrder;

    /// <summary>The reference is the policy at the stage's start (β &gt; 0): eval_kl_from_start reuses it.</summary>
    protected override Qwen3ForCausalLM? StartModel => reference;

    protected override string TrainerName => "grpo";
    protected override int DatasetSize => prompts.Count;
    public Codec Codec => codec;
    public IReadOnlyList<Example> Prompts => prompts;
    public Qwen3ForCausalLM Policy => Model;

    /// <summary>Extra metrics computed from the step's batch before the update (e.g. Theory's gradient alignment).
    /// Required when gradient_alignment_steps > 0: the option is refused if nothing is attached.</summary>
    public Func<GrpoBatch, long, IReadOnlyDictionary<string, double>>? BeforeUpdate { get; set; }

    public GrpoTrainer(
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> prompts,
        WeightedReward reward,
        GrpoOptions options,
        string outDir,
        Evaluator? evaluator = null
    )
        : base(model, options, outDir, evaluator)
    {
        this.codec = codec;
        this.prompts = prompts;
        this.reward = reward;
        promptIds = prompts.Select(codec.Prompt).ToArray();
        Memory.ForVariableShapes(model.ParameterCount()); // rollouts: see Util/Memory.cs, item 2
    }

    public GrpoTrainer(
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> prompts,
        IVerifier verifier,
        GrpoOptions options,
        string outDir,
        Evaluator? evaluator = null
    )
        : this(model, codec, prompts, new WeightedReward([(verifier, 1.0)]), options, outDir, evaluator) { }

    // a step's forwards take micro_batch_size rows at a time (or its default at the longest completion)
    protected override (string Option, long Rows, long Length, string Remedy)? StepShape
    {
        get
        {
            int rows = Opt.MicroRows(Opt.MaxCompletionLength, Model.Config.VocabSize);
            return (
                rows == Opt.PerDeviceTrainBatchSize ? "per_device_train_batch_size" : "micro_batch_size",
                rows,
                (promptIds.Length == 0 ? 0 : promptIds.Max(p => p.Length)) + Opt.MaxCompletionLength,
                "micro_batch_size splits a step's forwards without changing the step"
            );
        }
    }

    protected override bool FusedHead => Model.FusesLogProbsInBackward;

    protected override void OnResume()
    {
        if (Opt.GradientAlignmentSteps > 0 && BeforeUpdate is null)
            throw new WorkbookException(
                "option gradient_alignment_steps: set, but no diagnostic is attached to this trainer "
                    + "(attach Theory.GradientAlignment, as `run` and `train grpo` do)"
            );
        reference = LoadReference(Model, OutDir, Opt, State.Step);
        if (Opt.SftCoef > 0)
        {
            // 6. the expert stream is a second order over the same rows; its position is a function of the step
            sftData ??= prompts.Select(e => codec.Sft(e)).ToList();
            long drawn = State.Step * Opt.NumIterations * Opt.SftExamplesPerStep;
            sftOrder = new DataOrder(
                prompts.Count,
                Opt.Seed + 1,
                (int)(drawn / prompts.Count),
                (int)(drawn % prompts.Count)
            );
        }
        ResumeStopRule();
        // a resumed stage remembers whether its first steps had a reward signal
        var log = Path.Combine(OutDir, "metrics.jsonl");
        sawSignal =
            State.Step > 0
            && File.Exists(log)
            && MetricsLog
                .Read(log)
                .Any(r =>
                    r["step"]!.GetValue<long>() <= State.Step
                    && r["frac_reward_zero_std"] is { } f
                    && f.GetValue<double>() < 1
                );
    }

    /// <summary>The frozen reference (the policy at GRPO's start), kept on disk so that a resumed run uses the same
    /// one.</summary>
    internal static Qwen3ForCausalLM? LoadReference(Qwen3ForCausalLM model, string outDir, GrpoOptions o, long step)
    {
        if (o.Beta <= 0)
            return null;
        var refDir = Path.Combine(outDir, "reference");
        if (step == 0 && !File.Exists(Path.Combine(refDir, Checkpoint.WeightsFile)))
            Checkpoint.Save(model, refDir);
        var reference = Checkpoint.Load(refDir, model.DType, model.Device);
        reference.eval();
        foreach (var p in reference.parameters())
            p.requires_grad = false;
        return reference;
    }

    bool sawSignal;

    // --- stop rule (issue 14; Training/StopRule.cs) ---
    StopRule? stopRule;
    readonly List<StopEval> stopEvals = [];

    /// <summary>Where the stop rule stopped the stage (null: it has not fired), the prediction it logged at the check
    /// before, and the folder of the model kept at the stopping step when training went on (stop_hindsight).</summary>
    public long? StoppedAt { get; private set; }
    public long? PredictedBeforeStop { get; private set; }
    public const string StoppedModelDir = "stopped-model";

    /// <summary>stop_restore_best: the best evaluated step so far (measured Φ; the stage's start is step 0); once the
    /// rule has fired, the step whose model the stage returns.</summary>
    public long BestStep { get; private set; }

    string BestDir(long step) => Path.Combine(OutDir, $"stop-best-{step}");

    /// <summary>Keeps this step's model as a candidate best (atomically; a re-run step writes the same
    /// weights).</summary>
    void SaveBest(long step)
    {
        var dir = BestDir(step);
        if (Directory.Exists(dir))
            return;
        Checkpoint.Save(Model, dir + ".tmp");
        Directory.Move(dir + ".tmp", dir);
    }

    /// <summary>The key of J: the held-out mean reward under the stage's own (first) verifier.</summary>
    public string StopRewardKey => $"eval_rewards/{reward.Parts[0].Verifier.Name}/mean";

    protected override bool Finished => StoppedAt is not null && !Opt.StopHindsight;

    /// <summary>Rebuilds the rule's state from the evaluations kept in metrics.jsonl (those up to the checkpoint), so a
    /// resumed stage decides exactly as an uninterrupted one.</summary>
    void ResumeStopRule()
    {
        stopEvals.Clear();
        (StoppedAt, PredictedBeforeStop, BestStep) = (null, null, 0);
        if (Opt.StopWhen is null)
            return;
        stopRule = StopRule.Parse(Opt.StopWhen, "grpo.stop_when");
        if (Eval is null || Eval.Options.LossOnly)
            throw new WorkbookException(
                "option grpo.stop_when: the stop rule needs held-out evaluations that sample (an evaluator without "
                    + "loss_only)"
            );
        var log = Path.Combine(OutDir, "metrics.jsonl");
        foreach (var r in File.Exists(log) ? MetricsLog.Read(log) : [])
        {
            long st = r["step"]!.GetValue<long>();
            if (st <= State.Step && st % Opt.StopCheckSteps == 0 && r.ContainsKey("eval_sft_loss"))
                AddStopEval(st, r[StopRewardKey]?.GetValue<double>(), r["eval_sft_loss"]!.GetValue<double>());
        }
        var checks = StopEstimator.Replay(stopRule, stopEvals, Opt.MaxSteps, Opt.StopCheckSteps, Opt.StopPatience);
        if (checks.Count > 0 && checks[^1].Fire)
            (StoppedAt, PredictedBeforeStop) = (checks[^1].Step, checks.Count > 1 ? checks[^2].PredictedStep : null);
        else if (checks.Count > 0)
            PredictedBeforeStop = checks[^1].PredictedStep;
        if (!Opt.StopRestoreBest)
            return;
        // the best up to the checkpoint, recomputed; candidates saved after it are re-made as training redoes the steps
        if (stopEvals.Count > 0)
            BestStep = StopEstimator.BestStep(stopRule, stopEvals, StoppedAt ?? State.Step);
        foreach (var dir in Directory.GetDirectories(OutDir, "stop-best-*"))
            if (!long.TryParse(Path.GetFileName(dir)["stop-best-".Length..], out var st) || st > State.Step)
                Directory.Delete(dir, true);
        if (State.Step == 0)
            SaveBest(0); // the stage's start: the result when RL never beats it
        else if (!Directory.Exists(BestDir(BestStep)))
            throw new WorkbookException(
                $"{OutDir}: stop_restore_best needs the model of step {BestStep} ({BestDir(BestStep)}), which is gone"
            );
    }

    void AddStopEval(long step, double? j, double l)
    {
        if (j is null)
            throw new WorkbookException(
                $"option grpo.stop_when: the evaluations have no {StopRewardKey} (J of the stop rule)"
            );
        if (stopEvals.Count == 0 || stopEvals[^1].Step < step)
            stopEvals.Add(new StopEval(step, j.Value, l));
    }

    /// <summary>Fresh held-out prompts the stop rule never sees (the guarded pipeline's confirm_size): evaluated with
    /// the rule's evaluations and logged as confirm_* (eval_* renamed), so that Φ of the model the rule kept can be
    /// measured free of the selection that chose it. Null = none.</summary>
    public Evaluator? ConfirmEval { get; set; }

    protected override void OnEvaluated(long step, Dictionary<string, double> m)
    {
        if (stopRule is null)
            return;
        if (step % Opt.StopCheckSteps == 0)
            AddStopEval(step, m.TryGetValue(StopRewardKey, out var j) ? j : null, m["eval_sft_loss"]);
        if (ConfirmEval is not null && (step % Opt.StopCheckSteps == 0 || step == Opt.MaxSteps))
        {
            var c = ConfirmEval.Run(Model);
            Model.train();
            Log!.Log(
                step,
                c.Where(kv => kv.Key.StartsWith("eval_"))
                    .ToDictionary(kv => "confirm_" + kv.Key["eval_".Length..], kv => kv.Value),
                LogFields
            );
        }
    }

    protected override bool StopAfter(long step)
    {
        if (stopRule is null || step % Opt.StopCheckSteps != 0)
            return false;
        if (LastEval?.Step != step) // the rule's own evaluation, when the stage's cadence has none here
            Evaluate(step);
        if (StoppedAt is not null) // training on for hindsight: the evaluation above is all a check does
            return false;
        if (Opt.StopRestoreBest && StopEstimator.BestStep(stopRule, stopEvals, step) == step)
        {
            SaveBest(step);
            BestStep = step;
        }
        var c = StopEstimator.Check(stopRule, stopEvals, Opt.MaxSteps, Opt.StopCheckSteps, Opt.StopPatience);
        Log!.Log(
            step,
            new Dictionary<string, double>
            {
                ["stop_rule/predicted_step"] = c.PredictedStep,
                ["stop_rule/rate_reward"] = c.RateJ,
                ["stop_rule/rate_sft_loss"] = c.RateL,
                ["stop_rule/fired"] = c.Fire ? 1 : 0,
                ["stop_rule/best_step"] = Opt.StopRestoreBest ? BestStep : step,
            },
            LogFields
        );
        if (!c.Fire)
        {
            PredictedBeforeStop = c.PredictedStep;
            return false;
        }
        StoppedAt = step;
        if (!Opt.StopHindsight && !Opt.StopRestoreBest)
            return true;
        // keep the stage's result: the best model up to here (restore best) or this step's; a kill before the next
        // checkpoint re-fires here and writes the same weights
        KeepResult();
        return !Opt.StopHindsight;
    }

    /// <summary>Writes the stage's result to stopped-model (atomically): the best candidate (restore best) or the
    /// current model.</summary>
    void KeepResult()
    {
        var keep = Path.Combine(OutDir, StoppedModelDir);
        var tmp = keep + ".tmp";
        if (Directory.Exists(tmp))
            Directory.Delete(tmp, true);
        if (Opt.StopRestoreBest)
        {
            Directory.CreateDirectory(tmp);
            foreach (var f in Directory.GetFiles(BestDir(BestStep)))
                File.Copy(f, Path.Combine(tmp, Path.GetFileName(f)));
        }
        else
            Checkpoint.Save(Model, tmp);
        if (Directory.Exists(keep))
            Directory.Delete(keep, true);
        Directory.Move(tmp, keep);
    }

    /// <summary>After training, with stop_restore_best: when the rule never fired the stage ran its whole budget, and
    /// its result is still the best evaluated model (in stopped-model). Returns whether stopped-model holds the
    /// result.</summary>
    public bool KeepBestAtEnd()
    {
        if (stopRule is null || !Opt.StopRestoreBest)
            return StoppedAt is not null && Opt.StopHindsight;
        if (StoppedAt is null)
            KeepResult();
        return true;
    }

    /// <summary>Deletes the restore-best candidates once the stage's result is kept (and the stage marked
    /// done).</summary>
    public void DropBestCandidates()
    {
        foreach (var dir in Directory.GetDirectories(OutDir, "stop-best-*"))
            Directory.Delete(dir, true);
    }

    protected override Dictionary<string, double> TrainStep(long step, double lr)
    {
        // 1-3. generate, score, advantages
        var batch = GrpoBatch.GenerateAndScore(Model, reference, codec, prompts, promptIds, reward, Opt, Order, step);
        var m = batch.Metrics;
        if (step < Opt.ZeroSignalSteps)
        {
            sawSignal |= m["frac_reward_zero_std"] < 1;
            if (step == Opt.ZeroSignalSteps - 1 && !sawSignal)
                throw new NoRewardSignalException(Opt.ZeroSignalSteps, m["reward"], reward.Parts[0].Verifier.Name);
        }
        if (BeforeUpdate is not null && Opt.GradientAlignmentSteps > 0 && step % Opt.GradientAlignmentSteps == 0)
            foreach (var (k, v) in BeforeUpdate(batch, step))
                m[k] = v;
        // 4-6. the loss (with the SFT term when sft_coef > 0), μ times on the same rollouts
        var sw = Stopwatch.StartNew();
        var acc = new GrpoBatch.Accumulator();
        double coef = Opt.SftCoefAt(step);
        for (int it = 0; it < Opt.NumIterations; it++)
        {
            Optimizer.ZeroGrad();
            double sftLoss = 0;
            // the SFT term joins the last slice; the earlier slices take the GRPO part's weight (1 − μ when convex)
            Tensor Differentiate(Tensor share, bool last)
            {
                if (sftOrder is null)
                    return share;
                if (last)
                {
                    var sft = SftLoss(step);
                    sftLoss = sft.Value();
                    return MixedLoss(share, sft, coef, Opt.SftMix);
                }
                return Opt.SftMix == "convex" ? share.Times(1 - coef) : share;
            }
            var (grpoLoss, lv) = batch.Backward(Model, acc, Differentiate);
            if (sftOrder is not null)
            {
                acc.Add("grpo_loss", grpoLoss);
                acc.Add("sft_loss", sftLoss);
            }
            acc.Add("loss", lv);
            acc.Add("grad_norm", Update(lr, lv, step));
        }
        foreach (var (k, v) in acc.Means())
            m[k] = v;
        if (sftOrder is not null)
            m["sft_coef"] = coef;
        m["timing/update"] = sw.Elapsed.TotalSeconds;
        State = State with { NumTokens = State.NumTokens + batch.Tokens };
        m["num_tokens"] = State.NumTokens;
        return m;
    }

    /// <summary>SftTrainer's loss on the next sft_batch_size expert sequences: token-mean NLL of the
    /// responses.</summary>
    Tensor SftLoss(long step)
    {
        var b = Losses.MakeSftBatch(
            sftOrder!.Next(Opt.SftExamplesPerStep).Select(i => sftData![i]).ToList(),
            codec.PadId,
            Opt.SftMaxLength,
            packing: false
        );
        if (b.Tokens == 0)
            throw new WorkbookException(
                $"step {step + 1}: the SFT term's expert batch has no loss tokens (responses truncated away by "
                    + $"sft_max_length {Opt.SftMaxLength}?)"
            );
        return Losses.SftNll(Model, b).NllSum.Over(b.Tokens);
    }

    /// <summary>L_GRPO + c·L_SFT (add) or (1 − c)·L_GRPO + c·L_SFT (convex) (public for tests).</summary>
    public static Tensor MixedLoss(Tensor grpo, Tensor sft, double coef, string mix)
    {
        using TorchSharp.Scalar c = coef, // named, as in Loss: an implicit Scalar may be finalized mid-call
            rest = 1 - coef;
        return mix == "convex" ? (grpo * rest).Plus(sft * c) : grpo.Plus(sft * c);
    }

    /// <summary>Group-relative advantages (public for tests).</summary>
    public static double[] Advantages(double[] rewards, int groupSize, string scale)
    {
        int n = rewards.Length;
        var adv = new double[n];
        double batchStd = Std(rewards);
        for (int g = 0; g < n / groupSize; g++)
        {
            var grp = rewards.Skip(g * groupSize).Take(groupSize).ToArray();
            double mean = grp.Average(),
                std = Std(grp, mean);
            for (int i = 0; i < groupSize; i++)
            {
                double a = grp[i] - mean;
                adv[g * groupSize + i] = scale switch
                {
                    "group" => a / (std + 1e-4),
                    "batch" => a / (batchStd + 1e-4),
                    _ => a,
                };
            }
        }
        return adv;
    }

    /// <summary>The std each row's advantage is divided by (TRL: the group's for group/none, the batch's for batch).
    /// reward_std is its mean and frac_reward_zero_std the fraction of rows where it is zero.</summary>
    public static double[] RowStd(double[] rewards, int groupSize, string scale)
    {
        if (scale == "batch")
            return Enumerable.Repeat(Std(rewards), rewards.Length).ToArray();
        return Enumerable
            .Range(0, rewards.Length)
            .Select(j => Std(rewards.Skip(j / groupSize * groupSize).Take(groupSize).ToArray()))
            .ToArray();
    }

    /// <summary>Sample standard deviation (torch.std's default, as TRL uses).</summary>
    static double Std(double[] x, double mean) =>
        x.Length < 2 ? 0 : Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Length - 1));

    internal static double Std(double[] x) => Std(x, x.Average());

    /// <summary>The GRPO loss of one batch and the tensors of its metrics (public for the gradient tests). In
    /// kl_mode = reward the KL is in the advantages already and no KL term is added here.</summary>
    /// <param name="batchSequences">With <paramref name="batchTokens"/>: the normalisers of the whole batch when these
    /// rows are a slice of it, so that the slices' losses sum to the batch loss (default: the rows are the
    /// batch).</param>
    public static GrpoLoss Loss(
        Tensor logps,
        Tensor oldLogps,
        Tensor? refLogps,
        Tensor advantages,
        Tensor completionMask,
        GrpoOptions o,
        long? batchSequences = null,
        Tensor? batchTokens = null,
        Tensor? offPolicy = null
    )
    {
        using var scope = NewDisposeScope();
        var ratio = (logps - oldLogps).exp();
        var a = advantages.unsqueeze(1);
        double lo = 1 - o.Epsilon,
            hi = 1 + (o.EpsilonHigh ?? o.Epsilon);
        // every Scalar named: an implicit one may be finalized by a GC on another thread while the call reads it
        using TorchSharp.Scalar low = lo,
            high = hi,
            zero = 0,
            one = 1,
            beta = o.Beta,
            gamma = o.OffPolicyShapingGamma ?? 0,
            sequences = batchSequences ?? completionMask.shape[0],
            drTokens = (batchSequences ?? completionMask.shape[0]) * (double)o.MaxCompletionLength;
        var perTok = -minimum(ratio * a, ratio.clamp(low, high) * a);
        // 7. expert rows (LUFFY): ratio π_θ/π_expert with π_expert ≡ 1, optionally shaped, never clipped
        Tensor? off = offPolicy?.to(ScalarType.Bool).unsqueeze(1);
        if (off is not null)
        {
            var p = logps.exp();
            var f = o.OffPolicyShapingGamma is not null ? p / p.Plus(gamma) : p;
            perTok = where(off, -f * a, perTok);
        }
        Tensor? kl = null;
        if (o.Beta > 0 && o.KlMode == "loss" && refLogps is not null)
        {
            var d = refLogps - logps;
            kl = d.exp() - d - one;
            if (off is not null)
                kl = where(off, zeros_like(kl), kl); // the KL term covers on-policy tokens only
            perTok = perTok.Plus(kl * beta);
        }
        var cm = completionMask;
        var perSeq = (perTok * cm).sum(1) / cm.sum(1).clamp_min(one);
        var loss = o.LossType switch
        {
            "grpo" => batchSequences is null ? perSeq.mean() : perSeq.sum() / sequences,
            "dr_grpo" => (perTok * cm).sum() / drTokens,
            _ => (perTok * cm).sum() / (batchTokens ?? cm.sum()).clamp_min(one),
        };
        using var _ = no_grad();
        var isLow = ratio.lt(low) & a.lt(zero);
        var isHigh = ratio.gt(high) & a.gt(zero);
        if (off is not null)
        {
            isLow = isLow & off.logical_not();
            isHigh = isHigh & off.logical_not();
        }
        return new GrpoLoss(
            loss.MoveToOuterDisposeScope(),
            perTok.MoveToOuterDisposeScope(),
            kl?.MoveToOuterDisposeScope(),
            ratio.detach().MoveToOuterDisposeScope(),
            isLow.MoveToOuterDisposeScope(),
            isHigh.MoveToOuterDisposeScope()
        );
    }
}

/// <summary>One batch of rollouts as one record of tensors: prompt|completion ids and masks, old and reference
/// log-probabilities, rewards and advantages; plus the rollout metrics.</summary>
public sealed class GrpoBatch
{
    public Dictionary<string, double> Metrics { get; } = new();
    public long Tokens { get; private set; }

    /// <summary>Left-padded prompts then right-padded completions, [N, P + C], and its attention mask.</summary>
    public Tensor Ids { get; private set; } = null!;
    public Tensor Mask { get; private set; } = null!;

    /// <summary>Completion tokens that carry loss, [N, C] (truncated ones excluded with
    /// mask_truncated_completions).</summary>
    public Tensor CompletionMask { get; private set; } = null!;
    public Tensor Advantages { get; private set; } = null!;

    /// <summary>π_old log-probabilities (only when num_iterations > 1) and the reference's (β > 0).</summary>
    public Tensor? OldLogProbs { get; private set; }
    public Tensor? RefLogProbs { get; private set; }

    /// <summary>Verifier rewards, and the rewards the advantages were computed from (minus β·log-ratio in reward
    /// mode).</summary>
    public double[] Rewards { get; private set; } = [];
    public double[] ShapedRewards { get; private set; } = [];
    public int PromptLength { get; private set; }

    /// <summary>Rows per prompt in the training forwards: num_generations with shared_prompt_forward, else 1.</summary>
    public int GroupSize => opt.SharedPromptForward ? opt.NumGenerations : 1;

    /// <summary>off_policy_expert: 1 on the rows holding the expert response (the last of each group), [N]; else
    /// null.</summary>
    public Tensor? OffPolicy { get; private set; }

    /// <summary>Which rows are expert responses (all false without off_policy_expert).</summary>
    public bool[] OffPolicyRows { get; private set; } = [];
    GrpoOptions opt = null!;

    /// <summary>Sequences in the batch.</summary>
    public long Sequences => Ids.shape[0];

    /// <summary>Running means of per-iteration metrics.</summary>
    public sealed class Accumulator
    {
        readonly Dictionary<string, (double sum, int n)> d = new();

        public void Add(string k, double v)
        {
            d.TryGetValue(k, out var x);
            d[k] = (x.sum + v, x.n + 1);
        }

        public IEnumerable<(string, double)> Means() => d.Select(kv => (kv.Key, kv.Value.sum / kv.Value.n));
    }

    public static GrpoBatch GenerateAndScore(
        Qwen3ForCausalLM model,
        Qwen3ForCausalLM? reference,
        Codec codec,
        IReadOnlyList<Example> prompts,
        int[][] promptIds,
        WeightedReward reward,
        GrpoOptions o,
        DataOrder order,
        long step
    )
    {
        // a scope of its own, so that no temporary is left to a GC on another thread mid-call when the caller has none
        using var scope = NewDisposeScope();
        var r = new GrpoBatch { opt = o };
        var m = r.Metrics;
        int G = o.NumGenerations,
            nPrompts = o.PerDeviceTrainBatchSize / G,
            nOn = o.OffPolicyExpert ? G - 1 : G; // 7. LUFFY: the G-th member of each group is the expert response

        // rollout
        var sw = Stopwatch.StartNew();
        var idx = order.Next(nPrompts);
        var sampledPrompts = idx.SelectMany(i => Enumerable.Repeat(promptIds[i], nOn)).ToList();
        List<Completion> outs;
        using (var rng = new Generator((ulong)(o.Seed * 1_000_003 + step)))
            outs = Generation.Generate(
                model,
                sampledPrompts,
                o.Sampling(codec.EosId, codec.PadId),
                rng,
                groupSize: o.SharedPromptForward ? nOn : 1
            );
        model.train();
        m["timing/rollout"] = sw.Elapsed.TotalSeconds;
        int N = nPrompts * G;
        var off = new bool[N];
        if (o.OffPolicyExpert)
        {
            var mixed = new List<Completion>(N);
            for (int g = 0; g < nPrompts; g++)
            {
                mixed.AddRange(outs.Skip(g * nOn).Take(nOn));
                mixed.Add(ExpertCompletion(codec, prompts[idx[g]], o.MaxCompletionLength));
                off[mixed.Count - 1] = true;
            }
            outs = mixed;
        }
        var expanded = idx.SelectMany(i => Enumerable.Repeat(promptIds[i], G)).ToList();
        var onRows = Enumerable.Range(0, N).Where(j => !off[j]).ToArray();

        // rewards (metrics over the on-policy samples; the expert responses' mean separately)
        var total = new double[N];
        var per = new double[reward.Parts.Count, N];
        // the coin (null control) is drawn per step from the stage's seed, not scored from the text
        var coins = reward.Parts.Select(p => (p.Verifier as CoinReward)?.Draw(o.Seed, step, N)).ToArray();
        for (int j = 0; j < N; j++)
        {
            var e = prompts[idx[j / G]];
            var text = codec.Decode(outs[j].Tokens);
            for (int k = 0; k < reward.Parts.Count; k++)
            {
                per[k, j] = coins[k] is { } c
                    ? c[j]
                    : reward.Parts[k].Verifier.Score(e.PromptText, text, e.Reference).Reward ?? 0;
                total[j] += reward.Parts[k].Weight * per[k, j];
            }
        }
        r.Rewards = total;
        r.OffPolicyRows = off;
        m["reward"] = onRows.Average(j => total[j]);
        if (o.OffPolicyExpert)
        {
            m["on_policy/reward_mean"] = m["reward"];
            m["off_policy/reward_mean"] = Enumerable.Range(0, N).Where(j => off[j]).Average(j => total[j]);
        }
        for (int k = 0; k < reward.Parts.Count; k++)
        {
            var x = onRows.Select(j => per[k, j]).ToArray();
            m[$"rewards/{reward.Parts[k].Verifier.Name}/mean"] = x.Average();
            m[$"rewards/{reward.Parts[k].Verifier.Name}/std"] = GrpoTrainer.Std(x);
        }
        var sampled = onRows.Select(j => outs[j]).ToArray();
        var lens = sampled.Select(c => c.Tokens.Length).ToArray();
        m["completions/mean_length"] = lens.Average();
        m["completions/min_length"] = lens.Min();
        m["completions/max_length"] = lens.Max();
        m["completions/clipped_ratio"] = sampled.Count(c => c.Truncated) / (double)sampled.Length;
        var term = sampled.Where(c => !c.Truncated).Select(c => c.Tokens.Length).ToArray();
        m["completions/mean_terminated_length"] = term.Length > 0 ? term.Average() : 0;
        m["tokens_per_second"] = lens.Sum() / Math.Max(1e-9, m["timing/rollout"]);

        // sequences: left-padded prompt | right-padded completion
        int P = expanded.Max(p => p.Length),
            C = Math.Max(1, outs.Max(c => c.Tokens.Length));
        var (ids, mask) = PromptPadding.PromptCompletion(
            expanded,
            P,
            outs.Select(c => c.Tokens).ToList(),
            C,
            codec.PadId
        );
        var cm = new float[N * C];
        var real = new float[N * C];
        for (int j = 0; j < N; j++)
        {
            bool keep = !(o.MaskTruncatedCompletions && outs[j].Truncated);
            for (int t = 0; t < outs[j].Tokens.Length; t++)
            {
                real[j * C + t] = off[j] ? 0 : 1; // on-policy tokens: the KL of kl_mode = reward covers only these
                cm[j * C + t] = keep ? 1 : 0;
            }
        }
        r.PromptLength = P;
        r.Tokens = mask.Sum();
        r.Ids = tensor(ids, [N, P + C]);
        r.Mask = tensor(mask, [N, P + C]);
        r.CompletionMask = tensor(cm, [N, C]).to(model.Device);
        if (o.OffPolicyExpert)
            r.OffPolicy = tensor(off.Select(b => b ? 1f : 0f).ToArray()).to(model.Device);
        r.MicroRows = o.MicroRows(C, model.Config.VocabSize);
        Tensor? old = null;
        using (no_grad())
        {
            if (o.NumIterations > 1 || o.KlMode == "reward")
                old = r.LogProbs(model);
            if (reference is not null)
                r.RefLogProbs = r.LogProbs(reference);
        }
        if (o.NumIterations > 1)
            r.OldLogProbs = old;

        // advantages, from the shaped reward in kl_mode = reward
        var shaped = total;
        if (o.KlMode == "reward" && r.RefLogProbs is not null)
        {
            using var _ = no_grad();
            var realT = tensor(real, [N, C]).to(model.Device);
            var logRatio = ((old! - r.RefLogProbs) * realT).sum(1).to(ScalarType.Float64).data<double>().ToArray();
            shaped = total.Select((x, j) => x - o.Beta * logRatio[j]).ToArray();
            m["kl"] = logRatio.Sum() / Math.Max(1, real.Sum()); // per-token estimate of KL(π‖π_ref)
            m["reward_kl_penalty"] = o.Beta * onRows.Average(j => logRatio[j]); // verl's actor/reward_kl_penalty
            m["reward_shaped"] = shaped.Average();
        }
        r.ShapedRewards = shaped;
        var rowStd = GrpoTrainer.RowStd(shaped, G, o.ScaleRewards);
        m["reward_std"] = rowStd.Average();
        m["frac_reward_zero_std"] = rowStd.Count(s => s < 1e-8) / (double)N;
        var adv = GrpoTrainer.Advantages(shaped, G, o.ScaleRewards);
        r.Advantages = tensor(adv.Select(a => (float)a).ToArray()).to(model.Device);
        foreach (
            var t in new[] { r.Ids, r.Mask, r.CompletionMask, r.Advantages, r.OldLogProbs, r.RefLogProbs, r.OffPolicy }
        )
            t?.MoveToOuterDisposeScope();
        return r;
    }

    /// <summary>The expert response of <paramref name="e"/> as a completion of its generation prompt: the tokens after
    /// the prompt up to and including &lt;|im_end|&gt;, cut at <paramref name="maxLength"/> like a sample (then
    /// Truncated). Its LogProbs are empty: nothing sampled it.</summary>
    public static Completion ExpertCompletion(Codec codec, Example e, int maxLength)
    {
        var prompt = codec.Prompt(e);
        var full = codec.Sft(e).Ids;
        if (full.Length <= prompt.Length || !full.AsSpan(0, prompt.Length).SequenceEqual(prompt))
            throw new WorkbookException(
                "off_policy_expert: the expert rendering does not continue the generation prompt (chat template with "
                    + "enable_thinking on?), so the expert response cannot be placed in a group"
            );
        var tokens = full[prompt.Length..];
        int end = Array.IndexOf(tokens, codec.EosId);
        if (end >= 0)
            tokens = tokens[..(end + 1)];
        bool cut = tokens.Length > maxLength;
        return new Completion(cut ? tokens[..maxLength] : tokens, [], cut, cut ? null : "expert");
    }

    /// <summary>Rows per slice of this batch's forwards (<see cref="GrpoOptions.MicroRows"/> at its completion
    /// length).</summary>
    public int MicroRows { get; private set; }

    /// <summary>The batch's rows in slices of at most <paramref name="rows"/>, in order: [null] (the whole batch) when
    /// it fits in one.</summary>
    public IReadOnlyList<long[]?> Slices(int rows)
    {
        long n = Sequences;
        if (rows >= n)
            return [null];
        return Enumerable
            .Range(0, (int)((n + rows - 1) / rows))
            .Select(k =>
                (long[]?)
                    Enumerable.Range(0, (int)Math.Min(rows, n - k * rows)).Select(j => (long)k * rows + j).ToArray()
            )
            .ToList();
    }

    /// <summary>Rows per prompt in a slice's forward: consecutive slices of <paramref name="rows"/> rows start at
    /// multiples of it, so blocks of gcd(rows, G) rows never cross a group.</summary>
    int SliceGroup(long[]? slice, int rows) => slice is null ? GroupSize : (int)Gcd(rows, GroupSize);

    static long Gcd(long a, long b) => b == 0 ? a : Gcd(b, a % b);

    /// <summary>Completion log-probabilities of the batch under <paramref name="model"/> without gradients, slice by
    /// slice (π_old and the reference).</summary>
    Tensor LogProbs(Qwen3ForCausalLM model)
    {
        using var scope = NewDisposeScope();
        var parts = Slices(MicroRows)
            .Select(sl =>
                Losses
                    .CompletionLogProbs(
                        model,
                        Pick(Ids, sl),
                        Pick(Mask, sl),
                        PromptLength,
                        opt.Temperature,
                        entropy: false,
                        SliceGroup(sl, MicroRows)
                    )
                    .LogProbs
            )
            .ToList();
        return (parts.Count == 1 ? parts[0] : cat(parts, 0)).MoveToOuterDisposeScope();
    }

    static Tensor Pick(Tensor t, long[]? rows) => rows is null ? t : t.index_select(0, tensor(rows, device: t.device));

    /// <summary>Forward and backward of the batch's loss in slices of at most <see cref="MicroRows"/> rows, metrics
    /// over the whole batch into <paramref name="acc"/>. <paramref name="differentiate"/> makes what is differentiated
    /// from a slice's share of the loss and whether it is the last slice (a weight; the SFT term joined to the last);
    /// default the share. Returns the sum of the shares (the batch's GRPO loss) and of what was differentiated.
    /// </summary>
    public (double Loss, double Differentiated) Backward(
        Qwen3ForCausalLM model,
        Accumulator acc,
        Func<Tensor, bool, Tensor>? differentiate = null
    )
    {
        var sums = new TokenSums();
        var slices = Slices(MicroRows);
        double loss = 0,
            total = 0;
        for (int i = 0; i < slices.Count; i++)
        {
            using var scope = NewDisposeScope();
            using var forBackward = model.ForBackward();
            var share = Loss(model, sums, slices[i], SliceGroup(slices[i], MicroRows));
            var d = differentiate?.Invoke(share, i == slices.Count - 1) ?? share;
            d.backward();
            loss += share.Value();
            total += d.Value();
        }
        sums.MeansInto(acc);
        return (loss, total);
    }

    /// <summary>Token-weighted metrics summed over a step's slices: each is Σ value·mask / Σ mask over the whole batch,
    /// however it was split (a mask with no tokens gives 0, or no entry when <c>skipEmpty</c>).</summary>
    sealed class TokenSums
    {
        readonly List<(string Key, double Num, double Den, bool SkipEmpty)> items = [];

        public void Add(string key, double num, double den, bool skipEmpty = false)
        {
            int i = items.FindIndex(x => x.Key == key);
            if (i < 0)
                items.Add((key, num, den, skipEmpty));
            else
                items[i] = (key, items[i].Num + num, items[i].Den + den, skipEmpty);
        }

        public void MeansInto(Accumulator acc)
        {
            foreach (var (key, num, den, skipEmpty) in items)
                if (den > 0 || !skipEmpty)
                    acc.Add(key, num / Math.Max(1, den));
        }
    }

    /// <summary>The GRPO loss of this batch under the current policy; adds entropy, kl and clip metrics to the
    /// accumulator. With <paramref name="rows"/>: those rows' share of the batch loss (the shares of a partition sum to
    /// the loss), each row's prompt run on its own.</summary>
    public Tensor Loss(Qwen3ForCausalLM model, Accumulator acc, long[]? rows = null)
    {
        var sums = new TokenSums();
        var loss = Loss(model, sums, rows, rows is null ? GroupSize : 1);
        sums.MeansInto(acc);
        return loss;
    }

    Tensor Loss(Qwen3ForCausalLM model, TokenSums sums, long[]? rows, int groupSize)
    {
        // checkpointing applies only without a cache, and the shared prompt is one: per row, to checkpoint the layers.
        // π_old and the reference (no gradient) keep the shared prompt, so they round differently from this forward
        if (model.GradientCheckpointing)
            groupSize = 1;
        using var scope = NewDisposeScope(); // as in GenerateAndScore: temporaries held whatever the caller has
        Tensor ids = Pick(Ids, rows),
            mask = Pick(Mask, rows),
            cm = Pick(CompletionMask, rows),
            adv = Pick(Advantages, rows);
        Tensor? old = OldLogProbs is null ? null : Pick(OldLogProbs, rows),
            refLp = RefLogProbs is null ? null : Pick(RefLogProbs, rows),
            off = OffPolicy is null ? null : Pick(OffPolicy, rows);
        var (lp, entropy) = Losses.CompletionLogProbs(
            model,
            ids,
            mask,
            PromptLength,
            opt.Temperature,
            groupSize: groupSize
        );
        var l = rows is null
            ? GrpoTrainer.Loss(lp, old ?? lp.detach(), refLp, adv, cm, opt, offPolicy: off)
            : GrpoTrainer.Loss(lp, old ?? lp.detach(), refLp, adv, cm, opt, Sequences, CompletionMask.sum(), off);
        using (no_grad())
        {
            // entropy, KL and clipping describe the on-policy tokens; the expert tokens get their own metrics
            var onCm = off is null ? cm : cm * off.to(cm.dtype).OneMinus().unsqueeze(1);
            double denom = onCm.sum().Value();
            void Sum(string key, Tensor t) => sums.Add(key, (t.to(cm.dtype) * onCm).sum().Value(), denom);
            Sum("entropy", entropy!);
            if (l.Kl is not null)
                Sum("kl", l.Kl);
            Sum("clip_ratio/low_mean", l.IsLow);
            Sum("clip_ratio/high_mean", l.IsHigh);
            Sum("clip_ratio/region_mean", l.IsLow | l.IsHigh);
            if (off is not null)
            {
                var offCm = cm * off.to(cm.dtype).unsqueeze(1);
                double offDenom = offCm.sum().Value();
                sums.Add(
                    "off_policy/prob_mean",
                    (lp.detach().exp().to(cm.dtype) * offCm).sum().Value(),
                    offDenom,
                    skipEmpty: true
                );
            }
        }
        return l.Loss.MoveToOuterDisposeScope();
    }
}
