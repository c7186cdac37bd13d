// GRPO's micro_batch_size: a step's loss taken in slices of rows gives the whole batch's loss, gradients, metrics
// and no-gradient log-probabilities (float64, to rounding), for every loss_type, with the KL term, π_old, the shared
// prompt forward, slices that split a group or hold several, and LUFFY's expert rows; and a trainer's run with slices
// matches one without, the SFT term included.
using Workbook.Data;
using Workbook.Training;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class MicroBatchTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    static GrpoOptions Options(string lossType, bool luffy) =>
        new()
        {
            PerDeviceTrainBatchSize = 12,
            NumGenerations = 4,
            MaxCompletionLength = 6,
            Beta = 0.3,
            LossType = lossType,
            NumIterations = 2, // π_old's log-probabilities enter the ratio, and are made slice by slice
            OffPolicyExpert = luffy,
            OffPolicyShapingGamma = luffy ? 0.1 : null,
            Seed = 5,
        };

    /// <param name="large">as a large model trains: checkpointed layers, the fused head and the in-place lookup</param>
    (GrpoBatch Batch, double Loss, Tensor[] Grads, Dictionary<string, double> Metrics) Step(
        GrpoOptions o,
        bool large = false
    )
    {
        var prompts = fx.Task.Train.Take(9).ToList();
        using var model = fx.NewModel(21, ScalarType.Float64);
        if (large)
            (model.GradientCheckpointing, model.LookupIntoGradFrom) = (true, 0);
        using var reference = fx.NewModel(22, ScalarType.Float64);
        // a step away from π_old, so that the ratio and its clipping are not all ones
        var batch = GrpoBatch.GenerateAndScore(
            model,
            reference,
            fx.Codec,
            prompts,
            prompts.Select(fx.Codec.Prompt).ToArray(),
            new WeightedReward([(new CoinReward(), 1.0)]), // rewards that vary within groups: advantages not 0
            o,
            new DataOrder(prompts.Count, 5),
            0
        );
        using (no_grad())
        using (var g = new Generator(7))
            foreach (var p in model.parameters())
                p.add_(randn(p.shape, p.dtype, generator: g).Times(0.3), HeldScalars.One);
        var acc = new GrpoBatch.Accumulator();
        var (loss, total) = batch.Backward(model, acc);
        Assert.Equal(loss, total); // nothing joined the shares
        return (batch, loss, model.parameters().Select(p => p.grad!.clone()).ToArray(), acc.Means().ToDictionary());
    }

    [Theory]
    [InlineData("dapo", false, 1, true)] // Qwen3-0.6B's default: one row a slice, per row, checkpointed, fused head
    [InlineData("grpo", true, 4, true)]
    [InlineData("dapo", false, 1)]
    [InlineData("dapo", true, 3)] // a slice of 3 splits groups of 4: blocks of gcd(3, 4) = 1 row
    [InlineData("grpo", false, 2)] // each group in two slices, its prompt run once per slice
    [InlineData("dr_grpo", false, 8)] // two whole groups, then one
    [InlineData("bnpo", true, 5)] // slices of 5, 5 and 2 rows
    public void A_step_in_slices_equals_the_step_on_the_whole_batch(
        string lossType,
        bool luffy,
        int rows,
        bool large = false
    )
    {
        var o = Options(lossType, luffy);
        var whole = Step(o);
        var sliced = Step(o with { MicroBatchSize = rows }, large);
        Assert.Equal(12, whole.Batch.MicroRows); // the compact vocabulary's default: the whole batch
        Assert.Equal(rows, sliced.Batch.MicroRows);
        Assert.True(whole.Batch.Ids.eq(sliced.Batch.Ids).all().item<bool>()); // the rollouts do not depend on it
        Assert.True(whole.Batch.OldLogProbs!.allclose(sliced.Batch.OldLogProbs!, rtol: 1e-10, atol: 1e-12));
        Assert.True(whole.Batch.RefLogProbs!.allclose(sliced.Batch.RefLogProbs!, rtol: 1e-10, atol: 1e-12));
        Assert.Equal(whole.Loss, sliced.Loss, 10);
        for (int k = 0; k < whole.Grads.Length; k++)
            Assert.True(whole.Grads[k].allclose(sliced.Grads[k], rtol: 1e-8, atol: 1e-12), $"gradient {k}");
        Assert.Contains(whole.Grads, g => g.abs().max().item<double>() > 1e-4); // not vacuous
        Assert.Equal(whole.Metrics.Keys.Order(), sliced.Metrics.Keys.Order());
        // the metrics' sums run in the completion mask's float32, whole or per slice: equal to float32 rounding
        foreach (var (k, v) in whole.Metrics)
            Assert.True(
                Math.Abs(v - sliced.Metrics[k]) < 1e-6 * Math.Max(1, Math.Abs(v)),
                $"{k}: {v} whole, {sliced.Metrics[k]} in slices"
            );
        Assert.True(whole.Metrics["clip_ratio/region_mean"] > 0); // the clip metrics are not all zeros
        if (luffy)
            Assert.Contains("off_policy/prob_mean", whole.Metrics.Keys);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_stage_with_micro_batches_logs_what_one_without_them_logs(bool luffy)
    {
        var o = new GrpoOptions
        {
            LearningRate = 1e-3,
            MaxSteps = 2,
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = 8,
            ZeroSignalSteps = 0,
            NumIterations = 2,
            Beta = 0.02,
            SftCoef = luffy ? 0.5 : 0.7, // the SFT term joins the last slice; convex weights the others by 1 − μ
            SftMix = luffy ? "add" : "convex",
            SftBatchSize = 3,
            OffPolicyExpert = luffy,
        };
        List<Dictionary<string, double>> Run(int? rows)
        {
            var dir = TestData.TempDir();
            var model = fx.NewModel(14);
            new GrpoTrainer(
                model,
                fx.Codec,
                fx.Task.Train,
                new CoinReward(),
                o with
                {
                    MicroBatchSize = rows,
                },
                dir
            ).Train();
            return TrainerRuns.Comparable(dir);
        }
        var a = Run(null);
        var b = Run(3);
        Assert.Equal(a.Count, b.Count);
        int compared = 0;
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Keys.Order(), b[i].Keys.Order());
            foreach (var k in a[i].Keys.Where(k => !k.StartsWith("timing/") && k != "tokens_per_second"))
            {
                double x = a[i][k],
                    y = b[i][k];
                Assert.True(Math.Abs(x - y) <= 2e-4 * Math.Max(1, Math.Abs(x)), $"line {i} {k}: {x} vs {y}");
                compared++;
            }
        }
        Assert.True(a.Any(r => r.ContainsKey("sft_loss") && r.ContainsKey("grpo_loss")));
        Assert.True(compared > 20);
    }

    [Fact]
    public void The_default_takes_the_whole_batch_at_a_compact_vocabulary_and_one_row_at_qwen3s()
    {
        var o = new GrpoOptions();
        Assert.Equal(8, o.MicroRows(256, 4096));
        Assert.Equal(1, o.MicroRows(256, 151_936));
        Assert.Equal(6, o.MicroRows(64, 151_936)); // 64 × 151,936 × 4 bytes = 37.1 MiB: six rows in 256 MiB
        Assert.Equal(5, (o with { MicroBatchSize = 5 }).MicroRows(256, 151_936)); // set: honoured as given
    }

    [Theory]
    [InlineData("micro_batch_size=0", "must be >= 1")]
    [InlineData("micro_batch_size=9", "more than a step's batch")]
    public void A_micro_batch_size_out_of_range_is_refused_naming_the_option(string set, string why)
    {
        var e = Assert.Throws<WorkbookException>(() => TrainOptions.Load<GrpoOptions>(null, [set]));
        Assert.Contains("micro_batch_size", e.Message);
        Assert.Contains(why, e.Message);
    }
}
