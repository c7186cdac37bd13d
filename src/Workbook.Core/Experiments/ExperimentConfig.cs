// The experiment configuration: task, model shape, budgets of each stage, seeds. Plain record, JSON with snake_case keys
// (unknown keys are errors), written in full into every run folder. Defaults are the embedded default the README's first
// command runs; `--quick` shrinks the budgets for CI.
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Data;
using Workbook.Model;
using Workbook.Training;

namespace Workbook.Experiments;

public sealed record ExperimentConfig
{
    /// <summary>grammar | arithmetic | cola:FILE | gsm8k:FILE.</summary>
    public string Dataset { get; init; } = "grammar";
    /// <summary>Seed of the dataset itself (generation / shuffling of the file); fixed across training seeds.</summary>
    public int DatasetSeed { get; init; } = 0;
    public TaskOptions Task { get; init; } = new() { TrainSize = 3000, EvalSize = 128 };

    /// <summary>A Hugging Face model folder to start from (then no base stage); null = a small Qwen3 trained here.</summary>
    public string? Model { get; init; }
    public int HiddenSize { get; init; } = 96;
    public int NumHiddenLayers { get; init; } = 3;
    public int NumAttentionHeads { get; init; } = 4;
    public int NumKeyValueHeads { get; init; } = 2;
    public int IntermediateSize { get; init; } = 256;
    public string Dtype { get; init; } = "f32";
    public string Device { get; init; } = "auto";

    /// <summary>Number of training seeds; the seeds are seed_base, seed_base+1, ...</summary>
    public int Seeds { get; init; } = 3;
    /// <summary>Reported runs use seeds from 1000; the settings were chosen on seeds 1..3 (see the report).</summary>
    public int SeedBase { get; init; } = 1000;

    /// <summary>The base stage: language modelling of the task's generic text (prompts and terse answers, loss on every
    /// token), the stand-in for pretraining. With the loss on the answer only, a model this small never learns the labels.</summary>
    public SftOptions Base { get; init; } = new() { LearningRate = 3e-3, MaxSteps = 600, PerDeviceTrainBatchSize = 32, LrSchedulerType = "constant", WarmupRatio = 0.05, CompletionOnlyLoss = false };
    public SftOptions Sft { get; init; } = new() { LearningRate = 3e-3, MaxSteps = 240, PerDeviceTrainBatchSize = 32, LrSchedulerType = "cosine", WarmupRatio = 0.05 };
    public GrpoOptions Grpo { get; init; } = new()
    {
        LearningRate = 5e-4, MaxSteps = 40, PerDeviceTrainBatchSize = 64, NumGenerations = 8, MaxCompletionLength = 40,
        Beta = 0.04, LrSchedulerType = "constant",
    };
    /// <summary>Evaluations per stage (besides the one at its start).</summary>
    public int EvalsPerStage { get; init; } = 4;
    public int InterleaveRounds { get; init; } = 4;
    /// <summary>λ of the joint objective L_SFT + λ·L_GRPO.</summary>
    public double JointRlWeight { get; init; } = 1.0;
    /// <summary>Samples per held-out prompt for the Monte-Carlo estimate of C1(β) (0 = skip).</summary>
    public int C1Samples { get; init; } = 8;

    public static readonly string[] Pipelines = ["sft-then-rl", "rl-then-sft", "interleaved", "joint"];

    public ExperimentConfig Quick() => this with
    {
        Task = Task with { TrainSize = 1000, EvalSize = 48 },
        Seeds = Math.Min(Seeds, 2),
        // issue 12: quick budgets are steps, so they replace num_train_epochs
        Base = Base with { MaxSteps = 500, NumTrainEpochs = null },
        Sft = Sft with { MaxSteps = 80, NumTrainEpochs = null },
        Grpo = Grpo with { MaxSteps = 16, PerDeviceTrainBatchSize = 32, NumTrainEpochs = null },
        EvalsPerStage = 2, InterleaveRounds = 2, C1Samples = 4,
    };

    public void Validate()
    {
        Task.Validate(); Base.Validate(); Sft.Validate(); Grpo.Validate();
        if (Seeds < 1) throw new WorkbookException($"option seeds: must be >= 1 (got {Seeds})");
        if (EvalsPerStage < 1) throw new WorkbookException("option evals_per_stage: must be >= 1");
        bool stepsKnown = Sft.NumTrainEpochs is null && Grpo.NumTrainEpochs is null;   // issue 12: else checked once resolved
        if (InterleaveRounds < 1 || (stepsKnown && InterleaveRounds > Math.Min(Sft.MaxSteps, Grpo.MaxSteps)))
            throw new WorkbookException($"option interleave_rounds: must be in [1, min(sft.max_steps, grpo.max_steps)] (got {InterleaveRounds})");
        if (JointRlWeight < 0) throw new WorkbookException("option joint_rl_weight: must be >= 0");
        if (Model is not null && !Directory.Exists(Model)) throw new WorkbookException($"--model {Model}: model folder not found");
        if (Model is null && (HiddenSize % NumAttentionHeads != 0 || (HiddenSize / NumAttentionHeads) % 2 != 0))
            throw new WorkbookException($"option hidden_size: {HiddenSize} must split into {NumAttentionHeads} heads of even size");
        Devices.ParseDType(Dtype);
    }

    public Qwen3Config ModelConfig(int vocab) => Qwen3Config.Tiny(vocab) with
    {
        HiddenSize = HiddenSize, NumHiddenLayers = NumHiddenLayers, NumAttentionHeads = NumAttentionHeads,
        NumKeyValueHeads = NumKeyValueHeads, HeadDim = HiddenSize / NumAttentionHeads, IntermediateSize = IntermediateSize,
    };

    public static ExperimentConfig Load(string? path, IEnumerable<string>? overrides = null)
    {
        var node = JsonConfig.WithOverrides(JsonConfig.Read(path), overrides);
        TrainOptions.StepsOrEpochs(node, path);   // issue 12: num_train_epochs replaces the default max_steps
        // nested option records start from this record's defaults, then the file's keys apply on top
        var defaults = JsonNode.Parse(JsonSerializer.Serialize(new ExperimentConfig(), TrainOptions.Json))!.AsObject();
        Merge(defaults, node);
        var c = JsonConfig.Deserialize<ExperimentConfig>(defaults, path ?? "config", TrainOptions.Json);
        c.Validate();
        return c;
    }

    static void Merge(JsonObject into, JsonObject from)
    {
        foreach (var (k, v) in from.ToList())
        {
            if (v is JsonObject o && into[k] is JsonObject target) Merge(target, o);
            else into[k] = v?.DeepClone();
        }
    }

    public string ToJson() => JsonSerializer.Serialize(this, TrainOptions.Json);
}
