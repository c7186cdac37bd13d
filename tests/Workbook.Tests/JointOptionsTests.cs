using Workbook.Experiments;
using Workbook.Training;

namespace Workbook.Tests;

/// <summary>The joint stage honours sft's options (issue 10: an option is honoured or rejected, never dropped).
/// </summary>
public class JointOptionsTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    [Fact]
    public void The_joint_stage_takes_sfts_optimizer_and_accumulation_options()
    {
        var cfg = ExperimentConfig.Load(
            null,
            [
                "sft.weight_decay=0.1",
                "sft.adam_beta2=0.95",
                "sft.adam_epsilon=1e-6",
                "sft.gradient_accumulation_steps=2",
                "sft.save_steps=7",
            ]
        );
        var j = cfg.JointStageOptions(steps: 12, seed: 5, evalEvery: 3);
        Assert.Equal(0.1, j.WeightDecay);
        Assert.Equal(0.95, j.AdamBeta2);
        Assert.Equal(1e-6, j.AdamEpsilon);
        Assert.Equal(7, j.SaveSteps);
        Assert.Equal(2, j.Sft.GradientAccumulationSteps);
        Assert.Equal((12, 5L, 3), (j.MaxSteps, j.Seed, j.EvalSteps));
    }

    /// <summary>sft_loss of the first two joint steps (λ = 0: the GRPO term adds nothing to the gradient).</summary>
    List<double> SftLosses(int batch, int accumulation)
    {
        var dir = TestData.TempDir();
        var o = new JointOptions
        {
            LearningRate = 1e-2,
            MaxSteps = 2,
            Seed = 3,
            RlWeight = 0,
            RlEvery = 100,
            RlOptimizer = "shared",
            Sft = new SftOptions { PerDeviceTrainBatchSize = batch, GradientAccumulationSteps = accumulation },
            Grpo = new GrpoOptions
            {
                PerDeviceTrainBatchSize = 4,
                NumGenerations = 2,
                MaxCompletionLength = 2,
                Beta = 0,
            },
        };
        using var model = fx.NewModel(7, TorchSharp.torch.ScalarType.Float64);
        new JointTrainer(model, fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir).Train();
        return MetricsLog
            .Read(Path.Combine(dir, "metrics.jsonl"))
            .Where(l => l.ContainsKey("sft_loss"))
            .Select(l => l["sft_loss"]!.GetValue<double>())
            .ToList();
    }

    [Fact]
    public void Gradient_accumulation_in_the_joint_sft_term_sees_the_rows_of_one_larger_batch()
    {
        // 2 micro-batches of 4 rows = one batch of 8 rows (token mean over all of them), step after step
        var accumulated = SftLosses(batch: 4, accumulation: 2);
        var whole = SftLosses(batch: 8, accumulation: 1);
        Assert.Equal(2, whole.Count);
        for (int i = 0; i < 2; i++)
            Assert.Equal(whole[i], accumulated[i], 9);
    }
}
