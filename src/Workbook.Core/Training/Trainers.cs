// The one place that turns trainer options into a trainer, for `run` (ExperimentRunner.RunStage) and `train`
// (TrainCommand). The options' type picks the trainer (SftOptions: SFT, GrpoOptions: GRPO, JointOptions: joint), so
// a trainer and its options cannot disagree; the options reach the trainer as given and the trainer validates them.
// Theory's diagnostics attach afterwards (GradientAlignment.AttachIfAsked): Training does not depend on Theory.
using Workbook.Data;
using Workbook.Model;
using Workbook.Verifiers;

namespace Workbook.Training;

public static class Trainers
{
    /// <summary>A trainer for <paramref name="options"/>: SFT on <paramref name="train"/>'s expert responses, GRPO on
    /// its prompts with <paramref name="reward"/>, or the joint objective with both.</summary>
    public static ITrainer Create(
        TrainOptions options,
        Qwen3ForCausalLM model,
        Codec codec,
        IReadOnlyList<Example> train,
        IVerifier reward,
        string outDir,
        Evaluator? evaluator = null
    ) =>
        options switch
        {
            SftOptions o => new SftTrainer(model, codec, train, o, outDir, evaluator),
            GrpoOptions o => new GrpoTrainer(model, codec, train, reward, o, outDir, evaluator),
            JointOptions o => new JointTrainer(model, codec, train, reward, o, outDir, evaluator),
            _ => throw new ArgumentException($"no trainer for {options.GetType().Name}", nameof(options)),
        };
}
