using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class StepMemoryTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    [Fact]
    public void Gradient_accumulation_matches_one_big_batch_and_keeps_one_micro_batch_alive()
    {
        // same rows in the same order: 1 × 8 and 2 × 4 must make the same token-mean step. In f64, because AdamW's
        // first steps are near sign(g): an f32 gradient within rounding of 0 may flip sign between the two sums
        // (CI's AVX2 kernels moved one element by 1.2e-5 at lr 1e-2), which says nothing about the weighting.
        Qwen3ForCausalLM Step(int batch, int accumulation)
        {
            var model = fx.NewModel(3, ScalarType.Float64);
            new SftTrainer(
                model,
                fx.Codec,
                fx.Task.Train.Take(16).ToList(),
                new SftOptions
                {
                    LearningRate = 1e-2,
                    MaxSteps = 2,
                    PerDeviceTrainBatchSize = batch,
                    GradientAccumulationSteps = accumulation,
                    LrSchedulerType = "constant",
                },
                TestData.TempDir()
            ).Train();
            return model;
        }
        using var one = Step(8, 1);
        using var two = Step(4, 2);
        var a = one.parameters().ToList();
        var b = two.parameters().ToList();
        for (int i = 0; i < a.Count; i++)
            Assert.True(
                (a[i] - b[i]).abs().max().item<double>() < 1e-9,
                $"parameter {i} differs by {(a[i] - b[i]).abs().max().item<double>()}"
            );
    }

    [Fact]
    public void A_step_that_cannot_fit_is_refused_naming_the_option()
    {
        var c = fx.NewModel(1).Config;
        // the estimate grows linearly in rows and at least linearly in length
        Assert.Equal(2 * StepMemory.Estimate(c, 8, 64), StepMemory.Estimate(c, 16, 64), 6);
        Assert.True(StepMemory.Estimate(c, 8, 128) > 2 * StepMemory.Estimate(c, 8, 64));
        StepMemory.Check(c, "per_device_train_batch_size", 8, 64, available: 1e9);
        var e = Assert.Throws<WorkbookException>(() =>
            StepMemory.Check(c, "per_device_train_batch_size", 100_000_000, 64, available: 1e9)
        );
        Assert.Contains("per_device_train_batch_size", e.Message);
        Assert.Contains("GB", e.Message);
    }

    [Fact]
    public void Checkpointing_and_the_fused_head_lower_the_estimate_to_what_they_keep()
    {
        var c = Qwen3Config.Qwen3_0_6B; // a GRPO slice: one row of 300 tokens
        double layer = 4.0 * c.HiddenSize + 2.0 * c.IntermediateSize + c.NumAttentionHeads * 300.0;
        Assert.Equal((c.NumHiddenLayers * layer + 2.0 * c.VocabSize) * 300 * 4, StepMemory.Estimate(c, 1, 300), 0);
        Assert.Equal(
            (c.NumHiddenLayers * (double)c.HiddenSize + layer) * 300 * 4,
            StepMemory.Estimate(c, 1, 300, checkpointing: true, fusedHead: true),
            0
        );
    }

    [Fact]
    public void An_oversized_batch_fails_before_training_allocates_it()
    {
        var model = fx.NewModel(1);
        var dir = TestData.TempDir();
        var e = Assert.Throws<WorkbookException>(() =>
            new SftTrainer(
                model,
                fx.Codec,
                fx.Task.Train.Take(16).ToList(),
                new SftOptions { MaxSteps = 1, PerDeviceTrainBatchSize = 1_000_000_000 },
                dir
            ).Train()
        );
        Assert.Contains("per_device_train_batch_size", e.Message);
        Assert.False(File.Exists(Path.Combine(dir, "metrics.jsonl")));
    }
}

public class AbandonedWorkTests
{
    [Fact]
    public void A_killed_base_stage_s_work_folder_is_removed_and_a_live_one_is_kept()
    {
        var dir = TestData.TempDir();
        var dead = Path.Combine(dir, ".tmp-seed-1000-999999999-abc"); // no such process
        var old = Path.Combine(dir, ".tmp-seed-1000-abcdef"); // the name before process ids
        var live = Path.Combine(dir, $".tmp-seed-1000-{Environment.ProcessId}-abc");
        var done = Path.Combine(dir, "seed-1000");
        foreach (var d in new[] { dead, old, live, done })
            Directory.CreateDirectory(d);
        Workbook.Experiments.ExperimentRunner.RemoveAbandonedWork(dir);
        Assert.False(Directory.Exists(dead));
        Assert.False(Directory.Exists(old));
        Assert.True(Directory.Exists(live));
        Assert.True(Directory.Exists(done));
    }
}
