using System.Text.Json.Nodes;
using Workbook.Experiments;
using Workbook.Reports;

namespace Workbook.Tests;

/// <summary>The main effect's headline weighs the controls: a rise that a control shows too is "not attributed", and
/// only a rise above every control is "held". Synthetic results through the real Summary.Build, no training.</summary>
public class HeadlineTests
{
    const string Strict = "eval_rewards/strict/mean",
        Lenient = "eval_rewards/lenient/mean";
    static readonly long[] Seeds = [1000, 1001, 1002];

    /// <summary>SFT then RL for one seed: the held-out SFT loss goes from 1.0 to 1.0 + rise during the RL
    /// stage.</summary>
    static SeedResult Result(long seed, double rise) =>
        new(
            seed,
            [new StageInfo("sft", "sft", 0, 10), new StageInfo("rl", "grpo", 10, 10)],
            [Point(0, 0, "sft", 2.0), Point(10, 1, "grpo", 1.0), Point(20, 1, "grpo", 1.0 + rise)],
            null
        );

    static EvalPoint Point(int step, int stage, string kind, double loss) =>
        new(
            step,
            stage,
            kind,
            new Dictionary<string, double>
            {
                ["eval_sft_loss"] = loss,
                ["eval_sft_nll_per_response"] = 10 * loss,
                [Strict] = 0.5,
                [Lenient] = 0.9,
            }
        );

    static List<SeedResult> Pipe(params double[] rises) => [.. Seeds.Select((s, k) => Result(s, rises[k]))];

    static JsonObject Build(Dictionary<string, List<SeedResult>> results) =>
        Summary.Build(
            ExperimentConfig.Load(null, []),
            results,
            Strict,
            Lenient,
            "design",
            new Dictionary<string, string>(),
            Seeds
        );

    [Fact]
    public void A_rise_above_every_control_is_held()
    {
        var s = Build(
            new()
            {
                ["sft-then-rl"] = Pipe(0.50, 0.55, 0.60),
                ["coin-reward"] = Pipe(0.01, 0.02, 0.00),
                ["fresh-optimizer"] = Pipe(0.00, 0.01, 0.01),
            }
        );
        Assert.True(s["prediction_held"]!["sft-then-rl"]!.GetValue<bool>());
        var text = s["statements"]!["sft-then-rl"]!.GetValue<string>();
        Assert.StartsWith("Held: ", text);
        Assert.Contains("rose by 0.550", text);
        // the headline stays the first statement
        Assert.Equal("sft-then-rl", s["statements"]!.AsObject().First().Key);
        Assert.Contains("<span class=held>held</span>", Report.Render(s, "t"));
    }

    [Fact]
    public void A_rise_that_a_control_shows_too_is_not_attributed_and_names_that_control()
    {
        var s = Build(
            new()
            {
                ["sft-then-rl"] = Pipe(0.50, 0.55, 0.60),
                // the coin null moves the loss as much: the paired difference straddles zero
                ["coin-reward"] = Pipe(0.55, 0.50, 0.62),
                ["fresh-optimizer"] = Pipe(0.00, 0.01, 0.01),
            }
        );
        Assert.False(s["prediction_held"]!["sft-then-rl"]!.GetValue<bool>());
        var text = s["statements"]!["sft-then-rl"]!.GetValue<string>();
        Assert.StartsWith("Not attributed: ", text);
        Assert.Contains("rose by 0.550", text);
        Assert.Contains("coin-reward", text);
        Assert.DoesNotContain("fresh-optimizer", text);
        Assert.Contains("<span class=not>not attributed</span>", Report.Render(s, "t"));
    }

    [Fact]
    public void Without_controls_the_headline_is_the_rise_alone_and_a_flat_loss_is_not_shown()
    {
        var held = Build(new() { ["sft-then-rl"] = Pipe(0.50, 0.55, 0.60) });
        Assert.StartsWith("Held: ", held["statements"]!["sft-then-rl"]!.GetValue<string>());
        var flat = Build(new() { ["sft-then-rl"] = Pipe(0.10, -0.10, 0.00), ["coin-reward"] = Pipe(0.00, 0.00, 0.00) });
        Assert.StartsWith("Not shown: ", flat["statements"]!["sft-then-rl"]!.GetValue<string>());
        Assert.False(flat["prediction_held"]!["sft-then-rl"]!.GetValue<bool>());
    }
}
