// Options records, one per trainer, with TRL's field names (snake_case in JSON) and TRL's defaults unless noted.
// Loaded from a JSON file; unknown keys are errors. `--set key=value` overrides apply before validation.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Workbook.Model;

namespace Workbook.Training;

public record TrainOptions
{
    /// <summary>Peak learning rate after warmup.</summary>
    public double LearningRate { get; init; } = 2e-5;

    /// <summary>Optimizer steps to run. With num_train_epochs set it must be 0 (unset): the steps come from the
    /// epochs.</summary>
    public int MaxSteps { get; init; } = 100;

    /// <summary>TRL's alternative to max_steps: passes over the training set, resolved to steps from the dataset size
    /// (<see cref="ResolveSteps"/>; fractional epochs round the steps up, as TRL does). null = use max_steps.</summary>
    public double? NumTrainEpochs { get; init; }
    public double WarmupRatio { get; init; } = 0.0;

    /// <summary>linear | cosine | constant.</summary>
    public string LrSchedulerType { get; init; } = "linear";
    public double WeightDecay { get; init; } = 0.0;
    public double AdamBeta1 { get; init; } = 0.9;
    public double AdamBeta2 { get; init; } = 0.999;
    public double AdamEpsilon { get; init; } = 1e-8;

    /// <summary>Gradient clipping threshold on the global L2 norm (0 = off).</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Evaluate every N steps (0 = only at the start and the end).</summary>
    public int EvalSteps { get; init; }

    /// <summary>Checkpoint every N steps (0 = only at the end).</summary>
    public int SaveSteps { get; init; }
    public int SaveTotalLimit { get; init; } = 2;

    /// <summary>Print a progress line every N steps.</summary>
    public int LoggingSteps { get; init; } = 10;
    public long Seed { get; init; } = 42;

    /// <summary>Compute dtype of the trained model: f32 or bf16 (bf16 keeps float32 master weights in the
    /// optimizer).</summary>
    public string Dtype { get; init; } = "f32";

    /// <summary>Each decoder layer keeps only its input in the training forwards and runs again in the backward
    /// (Model/CheckpointedLayer.cs): activations of hidden-size floats per token and layer instead of about 30 times
    /// that, for a second forward of every layer. The same gradients. null = on for models of 100M parameters or more
    /// (TRL's default is on; a small model would only lose time).</summary>
    public bool? GradientCheckpointing { get; init; }

    /// <summary>gradient_checkpointing, or its default for a model of <paramref name="parameters"/>.</summary>
    public bool CheckpointingFor(long parameters) => GradientCheckpointing ?? parameters >= Memory.LargeModel;

    public virtual void Validate()
    {
        if (!(LearningRate > 0))
            Fail("learning_rate", $"must be > 0 (got {LearningRate})");
        if (MaxSteps < 0)
            Fail("max_steps", $"must be >= 0 (got {MaxSteps})");
        if (NumTrainEpochs is { } ep && !(ep > 0))
            Fail("num_train_epochs", $"must be > 0 (got {ep})");
        if (NumTrainEpochs is not null && MaxSteps > 0)
            Fail(
                "num_train_epochs",
                $"give max_steps or num_train_epochs, not both (max_steps {MaxSteps}, "
                    + $"num_train_epochs {NumTrainEpochs})"
            );
        if (WarmupRatio is < 0 or > 1)
            Fail("warmup_ratio", "must be in [0, 1]");
        if (LrSchedulerType is not ("linear" or "cosine" or "constant"))
            Fail("lr_scheduler_type", $"'{LrSchedulerType}' is not linear, cosine or constant");
        if (MaxGradNorm < 0)
            Fail("max_grad_norm", "must be >= 0");
        if (EvalSteps < 0 || SaveSteps < 0)
            Fail("eval_steps/save_steps", "must be >= 0");
        if (AdamBeta1 is < 0 or >= 1 || AdamBeta2 is < 0 or >= 1)
            Fail("adam_beta1/adam_beta2", "must be in [0, 1)");
        Devices.ParseDType(Dtype);
    }

    /// <summary>Training examples one optimizer step consumes (SFT: sequences; GRPO: prompts).</summary>
    public virtual int ExamplesPerStep => 1;

    /// <summary>With num_train_epochs set: the same options with max_steps = ceil(epochs · ceil(n / examples per step))
    /// and num_train_epochs cleared; otherwise unchanged.</summary>
    public TrainOptions ResolveSteps(int datasetSize)
    {
        if (NumTrainEpochs is not { } ep)
            return this;
        if (datasetSize < 1)
            throw new WorkbookException("num_train_epochs: the training set is empty");
        long perEpoch = (datasetSize + ExamplesPerStep - 1) / ExamplesPerStep;
        long steps = (long)Math.Ceiling(ep * perEpoch - 1e-9);
        if (steps > int.MaxValue)
            Fail("num_train_epochs", $"{ep} epochs of {perEpoch} steps is too many steps");
        return this with { MaxSteps = (int)Math.Max(1, steps), NumTrainEpochs = null };
    }

    /// <summary>The key rule of num_train_epochs on a JSON config (before defaults are merged in): an object that sets
    /// num_train_epochs and a non-zero max_steps is an error; one that sets only num_train_epochs gets max_steps 0, so
    /// the default max_steps does not count as "set". Applies to nested objects (sft, grpo, base) too.</summary>
    public static void StepsOrEpochs(JsonObject node, string? path, string prefix = "")
    {
        if (node["num_train_epochs"] is JsonValue ep && ep.GetValueKind() != JsonValueKind.Null)
        {
            if (node["max_steps"] is JsonValue ms && !(ms.TryGetValue<int>(out var n) && n == 0))
                throw new WorkbookException(
                    $"{path ?? "options"}: give {prefix}max_steps or {prefix}num_train_epochs, not both"
                );
            node["max_steps"] = 0;
        }
        foreach (var (k, v) in node.ToList())
            if (v is JsonObject o)
                StepsOrEpochs(o, path, $"{prefix}{k}.");
    }

    protected static void Fail(string field, string why) => throw new WorkbookException($"option {field}: {why}");

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Reads options from a JSON file (or defaults) and applies key=value overrides.</summary>
    public static T Load<T>(string? path, IEnumerable<string>? overrides = null)
        where T : TrainOptions, new()
    {
        var node = JsonConfig.WithOverrides(JsonConfig.Read(path), overrides);
        StepsOrEpochs(node, path);
        var opts = JsonConfig.Deserialize<T>(node, path, Json);
        opts.Validate();
        return opts;
    }

    public string ToJson() => JsonSerializer.Serialize(this, GetType(), Json);
}

public static class TrainOptionsExtensions
{
    /// <summary>Typed <see cref="TrainOptions.ResolveSteps"/>.</summary>
    public static T WithSteps<T>(this T o, int datasetSize)
        where T : TrainOptions => (T)o.ResolveSteps(datasetSize);
}

public sealed record SftOptions : TrainOptions
{
    public int PerDeviceTrainBatchSize { get; init; } = 8;
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Longest sequence (prompt + response) in tokens; longer ones are truncated at the end.</summary>
    public int MaxLength { get; init; } = 1024;

    /// <summary>Loss on the assistant's reply only (TRL's completion_only_loss / assistant_only_loss).</summary>
    public bool CompletionOnlyLoss { get; init; } = true;

    /// <summary>Pack several examples into one row of max_length tokens (attention stays within each
    /// example).</summary>
    public bool Packing { get; init; }

    public override int ExamplesPerStep => PerDeviceTrainBatchSize * GradientAccumulationSteps;

    public override void Validate()
    {
        base.Validate();
        if (PerDeviceTrainBatchSize < 1)
            Fail("per_device_train_batch_size", "must be >= 1");
        if (GradientAccumulationSteps < 1)
            Fail("gradient_accumulation_steps", "must be >= 1");
        if (MaxLength < 2)
            Fail("max_length", "must be >= 2");
    }
}

public sealed record GrpoOptions : TrainOptions
{
    public GrpoOptions()
    {
        LearningRate = 1e-6;
    }

    /// <summary>Completions per optimizer step (TRL semantics): prompts per step = this / num_generations.</summary>
    public int PerDeviceTrainBatchSize { get; init; } = 8;

    /// <summary>G: completions sampled per prompt; advantages are relative to the group.</summary>
    public int NumGenerations { get; init; } = 8;
    public int MaxCompletionLength { get; init; } = 256;
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; }

    /// <summary>KL coefficient to the frozen reference (the policy at the start of GRPO). 0 = no reference.</summary>
    public double Beta { get; init; } = 0.0;

    /// <summary>Where β·KL goes. loss (TRL): a per-token k3 term in the loss. reward (verl's use_kl_in_reward): β times
    /// the sequence log-ratio log(π/π_ref) is subtracted from each reward, so the optimum is p* ∝ π_ref·e^{r/β}
    /// (Theorem 3.1's); needs β > 0, scale_rewards = none and a loss_type other than grpo (its 1/|y| weights move the
    /// fixed point).</summary>
    public string KlMode { get; init; } = "loss";
    public double Epsilon { get; init; } = 0.2;

    /// <summary>Upper clip bound (DAPO's clip-higher); null = epsilon.</summary>
    public double? EpsilonHigh { get; init; }

    /// <summary>μ: optimizer steps per batch of rollouts (the clipped ratio only matters when μ > 1). Unlike TRL,
    /// max_steps counts rollout batches: a run makes μ·max_steps optimizer steps.</summary>
    public int NumIterations { get; init; } = 1;

    /// <summary>group | batch | none: divide advantages by the group's std, the batch's std, or not at all.</summary>
    public string ScaleRewards { get; init; } = "group";

    /// <summary>grpo (per-sequence mean), dr_grpo (sum / (N·max_completion_length)), dapo / bnpo (token mean over the
    /// batch).</summary>
    public string LossType { get; init; } = "dapo";

    /// <summary>Exclude completions cut at max_completion_length from the loss.</summary>
    public bool MaskTruncatedCompletions { get; init; }

    /// <summary>The rollout's prefill and the training forwards (π_old, the reference, the loss) run each group's
    /// prompt once and share its keys and values with the group's completions (Model/SharedPrefix.cs), instead of once
    /// per row as TRL does. The same function in fewer FLOPs; rounding differs. false = per row. The
    /// gradient-alignment diagnostic differentiates single rows and always runs them per row, and so does the loss's
    /// forward under gradient_checkpointing (the prompt's keys would have to stay in the graph), where π_old and the
    /// reference, taken without gradients, still share it, so at num_iterations > 1 the ratio starts at 1 only to
    /// rounding.</summary>
    public bool SharedPromptForward { get; init; } = true;

    /// <summary>Rows per forward and backward within an optimizer step (verl's ppo_micro_batch_size_per_gpu; TRL has
    /// no such option: its gradient_accumulation_steps also sets how many completions a step generates). The batch's
    /// loss is taken in slices of rows whose gradients add up to the whole batch's: each loss_type keeps the whole
    /// batch's normaliser, and every metric is over the whole batch. Memory, not math: the same step, rounded
    /// differently. Also bounds the no-gradient forwards of π_old and the reference. null = as many rows as keep a
    /// slice's float32 logits within <see cref="MicroBatchLogitsBytes"/> (the whole batch at the task's compact
    /// vocabulary; one row of 256 completion tokens at Qwen3's 151,936).</summary>
    public int? MicroBatchSize { get; init; }

    /// <summary>The logits budget of micro_batch_size's default: 256 MiB of float32 (a 0.6B model's one-step peak at 8
    /// rows × 256 tokens, all at once, was 18.8 GiB).</summary>
    public const long MicroBatchLogitsBytes = 256L << 20;

    /// <summary>Rows per slice of a batch whose completions are <paramref name="completionLength"/> tokens long at
    /// <paramref name="vocab"/>: micro_batch_size, or its default.</summary>
    public int MicroRows(long completionLength, long vocab) =>
        MicroBatchSize
        ?? Losses.RowsWithin(
            MicroBatchLogitsBytes,
            Math.Max(1, completionLength) * vocab * sizeof(float),
            PerDeviceTrainBatchSize
        );

    /// <summary>Every N steps (0 = off), log the alignment of the RL and SFT gradients before the update:
    /// diagnostics/cos_rl_sft = cos(∇J, −∇L_SFT) on this step's rollouts and an expert batch (negative: the RL step
    /// raises the SFT loss), both gradient norms, and the spectral concentration of the per-example gradients (each
    /// expert example, each rollout sequence): diagnostics/spectral_top_fraction, spectral_epsilon, cos_bound = 1 − 2ε
    /// (Theory/Spectral.cs). Costs one forward/backward pass per example.</summary>
    public int GradientAlignmentSteps { get; init; }

    /// <summary>If every group of each of the first N steps has zero reward variance (frac_reward_zero_std = 1), the
    /// stage has no reward signal: it stops with NoRewardSignalException instead of running updates that do nothing
    /// (0 = never check).</summary>
    public int ZeroSignalSteps { get; init; } = 5;

    /// <summary>Expert examples in the SFT batch of the alignment diagnostic.</summary>
    public int GradientAlignmentExamples { get; init; } = 32;

    // ---- Mixing SFT into the GRPO stage (issue 14). All off by default: the default GRPO is unchanged. ----

    /// <summary>The SFT coefficient at the stage's start (0 = off). With sft_mix = add it is λ of L_GRPO + λ·L_SFT
    /// (InstructGPT's ptx term; CHORD's fixed-weight baseline); with sft_mix = convex it is μ of
    /// (1 − μ)·L_GRPO + μ·L_SFT (CHORD-μ) and must be in (0, 1]. When > 0 every optimizer step also takes a batch of
    /// sft_batch_size expert sequences from the stage's training examples (their expert responses) with its own data
    /// order, and L_SFT is SftTrainer's token-mean completion-only NLL on it. Logged as sft_coef (λ or μ) and
    /// sft_loss; grpo_loss is the GRPO part and loss the total.</summary>
    public double SftCoef { get; init; }

    /// <summary>add | convex: how the SFT term enters the loss (see sft_coef).</summary>
    public string SftMix { get; init; } = "add";

    /// <summary>The coefficient's value at the stage's end (the floor); the schedule goes from sft_coef to it. Must be
    /// in [0, sft_coef]; only with a decaying schedule (linear or cosine).</summary>
    public double SftCoefMin { get; init; }

    /// <summary>constant | linear | cosine: the coefficient at rollout step t of T is sft_coef_min + (sft_coef −
    /// sft_coef_min)·d(t/T), with d = 1, 1 − p, or ½(1 + cos πp). cosine is CHORD-μ's decay (its code decays μ from
    /// a peak to a valley with a half cosine, after an optional linear warmup that is not used here).</summary>
    public string SftCoefSchedule { get; init; } = "constant";

    /// <summary>Expert sequences per optimizer step for the SFT term; null = the prompts per step
    /// (per_device_train_batch_size / num_generations), so the SFT term sees one expert response per RL
    /// prompt.</summary>
    public int? SftBatchSize { get; init; }

    /// <summary>Longest expert sequence (prompt + response) of the SFT term, in tokens; longer ones are truncated at
    /// the end (SftOptions' default).</summary>
    public int SftMaxLength { get; init; } = 1024;

    /// <summary>LUFFY (arXiv 2504.14945): each group of num_generations holds G − 1 on-policy samples and the prompt's
    /// expert response as the G-th (tokenised as a completion, cut at max_completion_length, scored by the same
    /// reward); advantages are normalised over the mixed group. Expert tokens use the ratio π_θ(token) (LUFFY's
    /// importance ratio with the expert policy taken as 1), unclipped; on-policy tokens keep the clipped ratio. The KL
    /// term (either kl_mode) covers on-policy tokens only. reward, rewards/* and completions/* describe the on-policy
    /// samples (on_policy/reward_mean too); off_policy/reward_mean is the expert responses' mean reward.</summary>
    public bool OffPolicyExpert { get; init; }

    /// <summary>LUFFY's policy shaping γ: the expert tokens' ratio becomes π_θ/(π_θ + γ), which raises the gradient
    /// of low-probability expert tokens (LUFFY uses 0.1). null = off (ratio π_θ). Needs off_policy_expert.</summary>
    public double? OffPolicyShapingGamma { get; init; }

    /// <summary>Expert sequences the SFT term takes per optimizer step (sft_batch_size or its default).</summary>
    public int SftExamplesPerStep => SftBatchSize ?? ExamplesPerStep;

    /// <summary>The SFT coefficient (λ or μ) at rollout step <paramref name="step"/> of max_steps.</summary>
    public double SftCoefAt(long step)
    {
        double p = MaxSteps <= 0 ? 0 : Math.Clamp(step / (double)MaxSteps, 0, 1);
        double d = SftCoefSchedule switch
        {
            "linear" => 1 - p,
            "cosine" => 0.5 * (1 + Math.Cos(Math.PI * p)),
            _ => 1,
        };
        return SftCoefMin + (SftCoef - SftCoefMin) * d;
    }

    // --- stop rule (issue 14, section 3; Training/StopRule.cs) ---

    /// <summary>A stop rule: "sft_loss_rise > δ" or "dJ < λ*dL_SFT" (Training/StopRule.cs). Every stop_check_steps
    /// steps the stage evaluates on held-out data and the rule decides; when it fires the stage ends there. null =
    /// off.</summary>
    public string? StopWhen { get; init; }

    /// <summary>k: the stop rule's evaluation and decision cadence in steps (used only with stop_when).</summary>
    public int StopCheckSteps { get; init; } = 4;

    /// <summary>With stop_when: after the rule fires, keep the model of that step in &lt;out&gt;/stopped-model and
    /// train on to max_steps (evaluating every stop_check_steps), so the same run also measures what stopping elsewhere
    /// would have given (the `guarded` pipeline's hindsight). false = the stage ends when the rule fires.</summary>
    public bool StopHindsight { get; init; }

    /// <summary>With a marginal stop_when: the rule fires only when its condition held at this many consecutive checks
    /// (HF's early_stopping_patience, counted in checks). 1 = at the first.</summary>
    public int StopPatience { get; init; } = 1;

    /// <summary>With stop_when: when the rule fires, the stage's result (&lt;out&gt;/stopped-model) is the model at the
    /// evaluated step up to the firing one with the highest measured Φ, the stage's start included (HF's
    /// load_best_model_at_end). Each new best is kept as &lt;out&gt;/stop-best-&lt;step&gt; until the stage ends
    /// (one model copy per improvement on disk). false = the model at the firing step.</summary>
    public bool StopRestoreBest { get; init; }

    /// <summary>The generation options of the rollouts (and of evaluations that sample like them).</summary>
    public GenerationOptions Sampling(int eosId, int padId) =>
        GenerationOptions.Sampling(MaxCompletionLength, Temperature, TopP, TopK, [eosId], padId);

    /// <summary>Prompts per step: per_device_train_batch_size counts completions, num_generations per prompt.</summary>
    public override int ExamplesPerStep => Math.Max(1, PerDeviceTrainBatchSize / NumGenerations);

    public override void Validate()
    {
        base.Validate();
        if (NumGenerations < 2)
            Fail("num_generations", $"must be >= 2 for group-relative advantages (got {NumGenerations})");
        if (PerDeviceTrainBatchSize < NumGenerations || PerDeviceTrainBatchSize % NumGenerations != 0)
            Fail(
                "per_device_train_batch_size",
                $"{PerDeviceTrainBatchSize} must be a positive multiple of num_generations {NumGenerations}"
            );
        if (MaxCompletionLength < 1)
            Fail("max_completion_length", "must be >= 1");
        if (!(Temperature > 0))
            Fail("temperature", "must be > 0");
        if (!(TopP > 0 && TopP <= 1))
            Fail("top_p", "must be in (0, 1]");
        if (Beta < 0)
            Fail("beta", $"must be >= 0 (got {Beta})");
        if (Epsilon < 0 || EpsilonHigh < 0)
            Fail("epsilon", "must be >= 0");
        if (NumIterations < 1)
            Fail("num_iterations", "must be >= 1");
        if (ScaleRewards is not ("group" or "batch" or "none"))
            Fail("scale_rewards", $"'{ScaleRewards}' is not group, batch or none");
        if (LossType is not ("grpo" or "dr_grpo" or "dapo" or "bnpo"))
            Fail("loss_type", $"'{LossType}' is not grpo, dr_grpo, dapo or bnpo");
        if (KlMode is not ("loss" or "reward"))
            Fail("kl_mode", $"'{KlMode}' is not loss or reward");
        if (KlMode == "reward" && !(Beta > 0))
            Fail("kl_mode", "reward needs beta > 0 (with beta = 0 there is no KL to move)");
        if (KlMode == "reward" && ScaleRewards != "none")
            Fail(
                "kl_mode",
                $"reward needs scale_rewards = none (got {ScaleRewards}: dividing by a sampled std moves the optimum)"
            );
        if (KlMode == "reward" && LossType == "grpo")
            Fail(
                "kl_mode",
                "reward needs loss_type dapo, bnpo or dr_grpo (grpo's per-sequence 1/|y| weights move the optimum)"
            );
        if (MicroBatchSize is < 1)
            Fail("micro_batch_size", $"must be >= 1, or null for the default (got {MicroBatchSize})");
        if (MicroBatchSize > PerDeviceTrainBatchSize)
            Fail(
                "micro_batch_size",
                $"{MicroBatchSize} rows is more than a step's batch (per_device_train_batch_size "
                    + $"{PerDeviceTrainBatchSize}); at most that, or null"
            );
        if (ZeroSignalSteps < 0)
            Fail("zero_signal_steps", "must be >= 0");
        if (GradientAlignmentSteps < 0 || GradientAlignmentExamples < 1)
            Fail("gradient_alignment_steps/examples", "must be >= 0 / >= 1");
        ValidateMixing();
        ValidateStopRule();
    }

    void ValidateMixing()
    {
        if (!(SftCoef >= 0))
            Fail("sft_coef", $"must be >= 0 (got {SftCoef})");
        if (SftMix is not ("add" or "convex"))
            Fail("sft_mix", $"'{SftMix}' is not add or convex");
        if (SftCoefSchedule is not ("constant" or "linear" or "cosine"))
            Fail("sft_coef_schedule", $"'{SftCoefSchedule}' is not constant, linear or cosine");
        if (!(SftCoefMin >= 0))
            Fail("sft_coef_min", $"must be >= 0 (got {SftCoefMin})");
        if (SftCoefMin > SftCoef)
            Fail("sft_coef_min", $"the floor {SftCoefMin} is above the start sft_coef {SftCoef}");
        if (SftCoef == 0)
        {
            // every SFT-term option below would do nothing: refuse it rather than ignore it
            if (SftMix != "add")
                Fail("sft_mix", $"{SftMix} needs sft_coef > 0 (with sft_coef = 0 there is no SFT term)");
            if (SftCoefSchedule != "constant")
                Fail("sft_coef_schedule", "needs sft_coef > 0 (with sft_coef = 0 there is no SFT term)");
            if (SftBatchSize is not null)
                Fail("sft_batch_size", "needs sft_coef > 0 (with sft_coef = 0 there is no SFT term)");
            if (SftMaxLength != 1024)
                Fail("sft_max_length", "needs sft_coef > 0 (with sft_coef = 0 there is no SFT term)");
        }
        if (SftCoefSchedule == "constant" && SftCoefMin != 0)
            Fail("sft_coef_min", "a floor needs a decaying sft_coef_schedule (linear or cosine), not constant");
        if (SftMix == "convex" && SftCoef > 1)
            Fail(
                "sft_coef",
                $"with sft_mix = convex it is μ of (1 − μ)·L_GRPO + μ·L_SFT and must be <= 1 (got {SftCoef})"
            );
        if (SftBatchSize is < 1)
            Fail("sft_batch_size", $"must be >= 1 (got {SftBatchSize})");
        if (SftMaxLength < 2)
            Fail("sft_max_length", "must be >= 2");
        if (OffPolicyExpert && NumGenerations < 2)
            Fail(
                "off_policy_expert",
                $"needs num_generations >= 2 (one expert plus on-policy samples; got {NumGenerations})"
            );
        if (OffPolicyShapingGamma is { } gamma)
        {
            if (!OffPolicyExpert)
                Fail("off_policy_shaping_gamma", "needs off_policy_expert = true (it shapes the expert tokens' ratio)");
            if (!(gamma > 0))
                Fail("off_policy_shaping_gamma", $"must be > 0, or null for no shaping (got {gamma})");
        }
    }

    void ValidateStopRule()
    {
        if (StopWhen is not null)
            StopRule.Parse(StopWhen, "grpo.stop_when");
        if (StopCheckSteps < 1)
            Fail("stop_check_steps", $"must be >= 1 (got {StopCheckSteps})");
        if (StopWhen is not null && NumTrainEpochs is null && 2L * StopCheckSteps > MaxSteps)
            Fail(
                "stop_check_steps",
                $"{StopCheckSteps} leaves the rule fewer than two checks in max_steps {MaxSteps} (it needs three "
                    + "evaluations)"
            );
        if (StopHindsight && StopWhen is null)
            Fail("stop_hindsight", "needs stop_when (there is no stopping step to keep)");
        if (StopPatience < 1)
            Fail("stop_patience", $"must be >= 1 (got {StopPatience})");
        if (StopPatience > 1 && StopWhen is null)
            Fail("stop_patience", "needs stop_when (there is no rule to be patient with)");
        if (StopRestoreBest && StopWhen is null)
            Fail("stop_restore_best", "needs stop_when (there is no stopping step to restore from)");
    }
}
