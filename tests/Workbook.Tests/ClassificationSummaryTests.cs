using Workbook.Experiments;

namespace Workbook.Tests;

public class ClassificationSummaryTests
{
    [Fact]
    public void Final_accuracy_and_mcc_are_summarised_inside_their_ranges()
    {
        long[] seeds = [1000, 1001, 1002];
        double[] mcc = [0.95, -0.2, 0.99];
        SeedResult Result(int k) =>
            new(
                seeds[k],
                [new StageInfo("sft", "sft", 0, 10), new StageInfo("rl", "grpo", 10, 10)],
                [
                    .. Enumerable
                        .Range(0, 2)
                        .Select(i => new EvalPoint(
                            10 * i,
                            i,
                            i == 0 ? "sft" : "grpo",
                            new Dictionary<string, double>
                            {
                                ["eval_sft_loss"] = 1,
                                ["eval_sft_nll_per_response"] = 10,
                                ["eval_rewards/strict/mean"] = 0.5,
                                ["eval_rewards/lenient/mean"] = 0.9,
                                ["eval_accuracy/strict"] = i == 0 ? 0.1 : 0.99,
                                ["eval_mcc/strict"] = i == 0 ? 0 : mcc[k],
                            }
                        )),
                ],
                null
            );
        var results = new Dictionary<string, List<SeedResult>> { ["sft-then-rl"] = [Result(0), Result(1), Result(2)] };
        var summary = Summary.Build(
            ExperimentConfig.Load(null, []),
            results,
            "eval_rewards/strict/mean",
            "eval_rewards/lenient/mean",
            "design",
            new Dictionary<string, string>(),
            seeds
        );
        var c = summary["pipelines"]!["sft-then-rl"]!["final_classification"]!;
        Assert.Equal(0.99, c["accuracy/strict"]!["mean"]!.GetValue<double>(), 6);
        Assert.Equal(mcc, c["mcc/strict"]!["per_seed"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray());
        var ci = c["mcc/strict"]!["ci95"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        Assert.True(ci[0] >= -1 && ci[1] <= 1 && ci[0] < mcc.Average() && ci[1] > mcc.Average(), $"{ci[0]}, {ci[1]}");
        Assert.Null(c["accuracy/lenient"]); // not logged: not invented
    }
}
