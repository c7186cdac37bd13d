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

    /// <summary>Optimizer steps to run. With num_train_epochs set it must be 0 (unset): the steps come from the epochs.</summary>
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

    /// <summary>Compute dtype of the trained model: f32 or bf16 (bf16 keeps float32 master weights in the optimizer).</summary>
    public string Dtype { get; init; } = "f32";

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
                $"give max_steps or num_train_epochs, not both (max_steps {MaxSteps}, num_train_epochs {NumTrainEpochs})"
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

    /// <summary>Pack several examples into one row of max_length tokens (attention stays within each example).</summary>
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

    /// <summary>Where β·KL goes. loss (TRL): a per-token k3 term in the loss. reward (verl's use_kl_in_reward): β times the
    /// sequence log-ratio log(π/π_ref) is subtracted from each reward, so the optimum is p* ∝ π_ref·e^{r/β}
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

    /// <summary>grpo (per-sequence mean), dr_grpo (sum / (N·max_completion_length)), dapo / bnpo (token mean over the batch).</summary>
    public string LossType { get; init; } = "dapo";

    /// <summary>Exclude completions cut at max_completion_length from the loss.</summary>
    public bool MaskTruncatedCompletions { get; init; }

    /// <summary>Every N steps (0 = off), log the alignment of the RL and SFT gradients before the update:
    /// diagnostics/cos_rl_sft = cos(∇J, −∇L_SFT) on this step's rollouts and an expert batch (negative: the RL step raises
    /// the SFT loss), both gradient norms, and the spectral concentration of the per-example gradients (each expert example,
    /// each rollout sequence): diagnostics/spectral_top_fraction, spectral_epsilon, cos_bound = 1 − 2ε (Theory/Spectral.cs).
    /// Costs one forward/backward pass per example.</summary>
    public int GradientAlignmentSteps { get; init; }

    /// <summary>If every group of each of the first N steps has zero reward variance (frac_reward_zero_std = 1), the
    /// stage has no reward signal: it stops with NoRewardSignalException instead of running updates that do nothing
    /// (0 = never check).</summary>
    public int ZeroSignalSteps { get; init; } = 5;

    /// <summary>Expert examples in the SFT batch of the alignment diagnostic.</summary>
    public int GradientAlignmentExamples { get; init; } = 32;

    // --- stop rule (issue 14, section 3; Training/StopRule.cs) ---

    /// <summary>A stop rule: "sft_loss_rise > δ" or "dJ < λ*dL_SFT" (Training/StopRule.cs). Every stop_check_steps steps
    /// the stage evaluates on held-out data and the rule decides; when it fires the stage ends there. null = off.</summary>
    public string? StopWhen { get; init; }

    /// <summary>k: the stop rule's evaluation and decision cadence in steps (used only with stop_when).</summary>
    public int StopCheckSteps { get; init; } = 4;

    /// <summary>With stop_when: after the rule fires, keep the model of that step in &lt;out&gt;/stopped-model and train on
    /// to max_steps (evaluating every stop_check_steps), so the same run also measures what stopping elsewhere would
    /// have given (the `guarded` pipeline's hindsight). false = the stage ends when the rule fires.</summary>
    public bool StopHindsight { get; init; }

    /// <summary>The generation options of the rollouts (and of evaluations that sample like them).</summary>
    public GenerationOptions Sampling(int eosId, int padId) =>
        new()
        {
            MaxNewTokens = MaxCompletionLength,
            Temperature = Temperature,
            TopP = TopP,
            TopK = TopK,
            EosTokenIds = [eosId],
            PadTokenId = padId,
        };

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
        if (ZeroSignalSteps < 0)
            Fail("zero_signal_steps", "must be >= 0");
        if (GradientAlignmentSteps < 0 || GradientAlignmentExamples < 1)
            Fail("gradient_alignment_steps/examples", "must be >= 0 / >= 1");
        // stop rule (issue 14)
        if (StopWhen is not null)
            StopRule.Parse(StopWhen, "grpo.stop_when");
        if (StopCheckSteps < 1)
            Fail("stop_check_steps", $"must be >= 1 (got {StopCheckSteps})");
        if (StopWhen is not null && NumTrainEpochs is null && 2L * StopCheckSteps > MaxSteps)
            Fail(
                "stop_check_steps",
                $"{StopCheckSteps} leaves the rule fewer than two checks in max_steps {MaxSteps} (it needs three evaluations)"
            );
        if (StopHindsight && StopWhen is null)
            Fail("stop_hindsight", "needs stop_when (there is no stopping step to keep)");
    }
}
