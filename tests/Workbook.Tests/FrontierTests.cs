using System.Text.Json.Nodes;
using Workbook.Charts;
using Workbook.Experiments;
using Workbook.Reports;

namespace Workbook.Tests;

/// <summary>The decoupling frontier (issue 14): schema, Pareto membership, paired differences, bounded reward
/// intervals, the chart's traces and its place as the report's first chart. Synthetic results, no training.</summary>
public class FrontierTests
{
    internal const string Strict = "eval_rewards/strict/mean",
        Lenient = "eval_rewards/lenient/mean";
    static readonly long[] Seeds = [1000, 1001, 1002];

    /// <summary>A seed's curve of three evaluations; only the last one carries the final values, so a frontier built
    /// from any other evaluation would be wrong.</summary>
    static SeedResult Result(long seed, double loss, double reward) =>
        new(
            seed,
            [new StageInfo("sft", "sft", 0, 10), new StageInfo("rl", "grpo", 10, 10)],
            [
                .. Enumerable
                    .Range(0, 3)
                    .Select(i => new EvalPoint(
                        10 * i,
                        Math.Min(i, 1),
                        i < 1 ? "sft" : "grpo",
                        new Dictionary<string, double>
                        {
                            ["eval_sft_loss"] = i == 2 ? loss : 3.0 - i,
                            ["eval_sft_nll_per_response"] = 10 * loss,
                            [Strict] = i == 2 ? reward : 0.01 * i,
                            [Lenient] = reward,
                        }
                    )),
            ],
            null
        );

    static List<SeedResult> Pipe(double[] loss, double[] reward) =>
        [.. Seeds.Select((s, k) => Result(s, loss[k], reward[k]))];

    // final values per seed (1000, 1001, 1002)
    static readonly double[] BaseLoss = [0.50, 0.55, 0.60],
        BaseReward = [0.80, 0.82, 0.84];
    static readonly double[] InterLoss = [0.30, 0.36, 0.44],
        InterReward = [0.90, 0.95, 0.97];

    static Dictionary<string, List<SeedResult>> Results() =>
        new()
        {
            ["sft-then-rl"] = Pipe(BaseLoss, BaseReward),
            // lowest loss, lowest reward: on the front (nothing has a loss <= 0.40)
            ["rl-then-sft"] = Pipe([0.20, 0.21, 0.22], [0.40, 0.42, 0.44]),
            // better than sft-then-rl on both, on every seed
            ["interleaved"] = Pipe(InterLoss, InterReward),
            // a method not separated from sft-then-rl: equal means, noisy seeds
            ["chord"] = Pipe([0.45, 0.60, 0.60], [0.85, 0.75, 0.86]),
            // a name the workbook does not know is still a candidate (role "pipeline")
            ["my-method"] = Pipe([0.30, 0.36, 0.44], [0.90, 0.95, 0.97]),
            // a control far better than everything: greyed, never on the front
            ["lenient-reward"] = Pipe([0.01, 0.01, 0.01], [1.0, 1.0, 1.0]),
        };

    /// <summary>Summary.Build with the default config over seeds 1000–1002 (shared with HeadlineTests).</summary>
    internal static JsonObject Build(Dictionary<string, List<SeedResult>> results) =>
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
    public void Pareto_membership_matches_the_definition_on_every_configuration_of_three_grid_points()
    {
        var grid = (from l in new[] { 0.0, 1, 2 } from r in new[] { 0.0, 1, 2 } select (l, r)).ToArray();
        int configs = 0;
        foreach (var a in grid)
        foreach (var b in grid)
        foreach (var c in grid)
        {
            var pts = new[] { a, b, c };
            var front = Frontier.OnFront(pts);
            configs++;
            Assert.Contains(true, front); // a finite set always has a front
            for (int i = 0; i < 3; i++)
            {
                // on the front exactly when no point is <= on loss and >= on reward with one strict
                bool dominated = pts.Where((_, j) => j != i)
                    .Any(q => q.l <= pts[i].l && q.r >= pts[i].r && (q.l < pts[i].l || q.r > pts[i].r));
                Assert.Equal(!dominated, front[i]);
                // every point off the front is dominated by a point on it (dominance is transitive)
                if (!front[i])
                    Assert.Contains(Frontier.DominatedBy(pts, i), j => front[j]);
            }
        }
        Assert.Equal(729, configs);
    }

    [Fact]
    public void Ties_are_on_the_front_together_and_missing_points_are_never_on_it()
    {
        // two equal points: neither dominates the other
        Assert.Equal([true, true, false], Frontier.OnFront([(0.5, 0.8), (0.5, 0.8), (0.6, 0.8)]));
        // equal loss, higher reward dominates; equal reward, lower loss dominates
        Assert.Equal([false, true], Frontier.OnFront([(0.4, 0.5), (0.4, 0.6)]));
        Assert.Equal([true, false], Frontier.OnFront([(0.3, 0.6), (0.4, 0.6)]));
        // a NaN point is not on the front and dominates nothing
        Assert.Equal([false, true], Frontier.OnFront([(double.NaN, 0.9), (0.5, 0.1)]));
        Assert.Equal([false], Frontier.OnFront([(0.1, double.NaN)]));
    }

    [Fact]
    public void The_summary_has_the_frontier_schema_and_the_front_on_the_means()
    {
        var s = Build(Results());
        var fr = s["frontier"]!.AsObject();
        Assert.Equal("eval_sft_loss", fr["sft_loss_key"]!.GetValue<string>());
        Assert.Equal(Strict, fr["reward_key"]!.GetValue<string>());
        var pipes = fr["pipelines"]!.AsObject();
        Assert.Equal(
            ["sft-then-rl", "rl-then-sft", "interleaved", "chord", "my-method", "lenient-reward"],
            pipes.Select(kv => kv.Key)
        );
        foreach (var (name, p) in pipes)
        {
            foreach (var key in new[] { "final_sft_loss", "final_reward" })
            {
                Assert.NotNull(p![key]!["mean"]);
                Assert.Equal(2, p[key]!["ci95"]!.AsArray().Count);
                Assert.Equal(3, p[key]!["per_seed"]!.AsArray().Count);
            }
            Assert.Equal(Seeds, p!["seeds"]!.AsArray().Select(x => x!.GetValue<long>()));
            Assert.Equal(name != "sft-then-rl", p["vs_sft_then_rl"] is not null);
        }
        Assert.Equal("method", pipes["chord"]!["role"]!.GetValue<string>());
        Assert.Equal("pipeline", pipes["my-method"]!["role"]!.GetValue<string>());
        Assert.Equal("control", pipes["lenient-reward"]!["role"]!.GetValue<string>());
        // the final point is the last evaluation, not any earlier one
        Assert.Equal(BaseLoss, pipes["sft-then-rl"]!["final_sft_loss"]!["per_seed"]!.AsArray().Select(x => (double)x!));
        Assert.Equal(0.82, pipes["sft-then-rl"]!["final_reward"]!["mean"]!.GetValue<double>(), 6);
        // interleaved and my-method tie exactly: both on the front; rl-then-sft has the lowest loss; the control,
        // better than all of them, is not a candidate
        Assert.Equal(["rl-then-sft", "interleaved", "my-method"], fr["front"]!.AsArray().Select(x => (string)x!));
        Assert.False(pipes["lenient-reward"]!["on_front"]!.GetValue<bool>());
        Assert.False(pipes["sft-then-rl"]!["on_front"]!.GetValue<bool>());
        Assert.Equal(
            ["interleaved", "my-method"],
            pipes["sft-then-rl"]!["dominated_by"]!.AsArray().Select(x => (string)x!)
        );
        Assert.Null(pipes["lenient-reward"]!["dominated_by"]);
    }

    [Fact]
    public void Paired_differences_against_sft_then_rl_match_a_hand_computation()
    {
        var vs = Build(Results())["frontier"]!["pipelines"]!["interleaved"]!["vs_sft_then_rl"]!;
        // loss: per-seed differences -0.20, -0.19, -0.16; mean -0.18333; sd 0.0208167; t(2) 4.303
        double[] d = [-0.20, -0.19, -0.16];
        double mean = d.Average(),
            sd = Math.Sqrt(d.Sum(x => (x - mean) * (x - mean)) / 2),
            h = 4.303 * sd / Math.Sqrt(3);
        var loss = vs["final_sft_loss"]!;
        Assert.Equal(mean, loss["mean"]!.GetValue<double>(), 5);
        Assert.Equal(mean - h, loss["ci95"]![0]!.GetValue<double>(), 5);
        Assert.Equal(mean + h, loss["ci95"]![1]!.GetValue<double>(), 5);
        Assert.Equal(d, loss["per_seed"]!.AsArray().Select(x => Math.Round((double)x!, 6)));
        Assert.True(vs["sft_loss_separated"]!.GetValue<bool>());
        // reward: differences 0.10, 0.13, 0.13, bounded in [-1, 1] (Stat.Paired with the reward's range)
        var expect = Stat.Paired(InterReward, BaseReward, (0, 1));
        var reward = vs["final_reward"]!;
        Assert.Equal(expect.Mean, reward["mean"]!.GetValue<double>(), 5);
        Assert.Equal(expect.Ci95[0], reward["ci95"]![0]!.GetValue<double>(), 5);
        Assert.Equal(expect.Ci95[1], reward["ci95"]![1]!.GetValue<double>(), 5);
        Assert.True(expect.Ci95[0] > 0);
        Assert.True(vs["reward_separated"]!.GetValue<bool>());
        // chord: the intervals reach zero on both coordinates
        var chord = Build(Results())["frontier"]!["pipelines"]!["chord"]!["vs_sft_then_rl"]!;
        Assert.False(chord["sft_loss_separated"]!.GetValue<bool>());
        Assert.False(chord["reward_separated"]!.GetValue<bool>());
    }

    [Fact]
    public void Reward_intervals_stay_in_their_range_even_at_the_end_of_it()
    {
        var r = Results();
        r["joint"] = Pipe([0.5, 0.5, 0.5], [0.0, 0.02, 0.0]);
        r["rl-then-sft"] = Pipe([0.2, 0.2, 0.2], [1.0, 0.98, 1.0]);
        var pipes = Build(r)["frontier"]!["pipelines"]!.AsObject();
        foreach (var (name, p) in pipes)
        {
            foreach (var b in p!["final_reward"]!["ci95"]!.AsArray())
                Assert.InRange(b!.GetValue<double>(), 0, 1);
            foreach (var b in p["vs_sft_then_rl"]?["final_reward"]!["ci95"]!.AsArray() ?? [])
                Assert.InRange(b!.GetValue<double>(), -1, 1);
        }
        // the control sits at 1.0 on every seed: its interval is the point itself
        Assert.Equal([1.0, 1.0], pipes["lenient-reward"]!["final_reward"]!["ci95"]!.AsArray().Select(x => (double)x!));
        var rl = pipes["rl-then-sft"]!["final_reward"]!["ci95"]!.AsArray().Select(x => (double)x!).ToArray();
        Assert.True(rl[0] < 0.9933 && rl[1] <= 1.0, "below the mean 0.9933 and never above 1");
    }

    [Fact]
    public void The_frontier_statement_is_computed_and_flips_with_the_numbers()
    {
        var s = Build(Results());
        var text = Workbench.FrontierStatement(s);
        Assert.Contains(
            "on the front: rl-then-sft (SFT loss 0.210, reward 0.420), interleaved (SFT loss 0.367, reward 0.940), "
                + "my-method (SFT loss 0.367, reward 0.940).",
            text
        );
        Assert.Contains("sft-then-rl (dominated by interleaved, my-method)", text);
        Assert.Contains("sft-then-rl is off the front.", text);
        Assert.Contains("interleaved (front): SFT loss -0.183", text);
        Assert.Contains("the CIs separate both (lower SFT loss, higher reward): better on both", text);
        Assert.Contains("chord: SFT loss +0.000", text);
        Assert.Contains("the CIs separate neither coordinate", text);
        Assert.Contains("not candidates for the front", text);
        Assert.Contains("lenient-reward (SFT loss 0.010, reward 1.000)", text);

        // without the better pipelines, sft-then-rl is on the front; without sft-then-rl there is nothing to pair
        var r = Results();
        r.Remove("interleaved");
        r.Remove("my-method");
        Assert.Contains("sft-then-rl is on the front.", Workbench.FrontierStatement(Build(r)));
        r.Remove("sft-then-rl");
        var alone = Build(r);
        Assert.Contains("sft-then-rl did not run", Workbench.FrontierStatement(alone));
        Assert.Null(alone["frontier"]!["pipelines"]!["chord"]!["vs_sft_then_rl"]);
    }

    [Fact]
    public void The_paired_verdict_names_each_separated_coordinate_and_flips_with_the_intervals()
    {
        Assert.Equal("the CIs separate only the reward (lower reward)", PairedVerdict.Of(S(-0.1, 0.1), S(-0.2, -0.1)));
        Assert.Equal("the CIs separate only the SFT loss (higher SFT loss)", PairedVerdict.Of(S(0.1, 0.2), S(-1, 1)));
        Assert.Equal(
            "the CIs separate both (lower SFT loss, higher reward): better on both",
            PairedVerdict.Of(S(-0.2, -0.1), S(0.1, 0.2))
        );
        Assert.Equal(
            "the CIs separate both (higher SFT loss, lower reward): worse on both",
            PairedVerdict.Of(S(0.1, 0.2), S(-0.2, -0.1))
        );
        Assert.Equal(
            "the CIs separate both (higher SFT loss, higher reward): a trade-off",
            PairedVerdict.Of(S(0.1, 0.2), S(0.1, 0.2))
        );
        // an interval that touches zero does not separate
        Assert.Equal("the CIs separate neither coordinate", PairedVerdict.Of(S(0, 0.2), S(-0.2, 0)));
    }

    [Fact]
    public void The_summary_comparisons_use_the_frontier_verdict_computed_from_their_own_intervals()
    {
        var s = Build(Results());
        var comparisons = s["statements"]!["comparisons"]!.GetValue<string>();
        // interleaved is better than sft-then-rl on every seed; against rl-then-sft it trades loss for reward
        const string better = "the CIs separate both (lower SFT loss, higher reward): better on both";
        Assert.Contains("interleaved against sft-then-rl: SFT loss -0.183 (CI [", comparisons);
        Assert.Contains(better, comparisons);
        Assert.Contains(better, Workbench.FrontierStatement(s));
        Assert.Contains("against rl-then-sft: SFT loss +0.157 (CI [", comparisons);
        Assert.Contains("the CIs separate both (higher SFT loss, higher reward): a trade-off", comparisons);
    }

    [Fact]
    public void One_seed_gives_no_interval_and_the_statement_says_so() =>
        Assert.Equal(
            "no interval (under 2 seeds), so nothing is separated",
            PairedVerdict.Of(Stat.Of([-0.1]), Stat.Bounded([0.2], -1, 1))
        );

    static Stat S(double lo, double hi) => new((lo + hi) / 2, [lo, hi], []);

    [Fact]
    public void The_chart_has_a_point_with_error_bars_per_pipeline_the_seeds_and_the_front_as_a_step_line()
    {
        var s = Build(Results());
        var html = CurveCharts.Html(Workbench.FrontierChart(s));
        Assert.Contains("95% CI error bars", html);
        foreach (var name in new[] { "rl-then-sft", "interleaved", "my-method" })
            Assert.Contains($"\"{FrontierChart.MeanName(name, "pipeline", true)}\"", html);
        Assert.Contains($"\"{FrontierChart.MeanName("chord", "method", false)}\"", html);
        Assert.Contains("\"lenient-reward (control, not a candidate): mean, 95% CI\"", html);
        Assert.Contains("diamond-open", html);
        Assert.Contains("#9a9a9a", html);
        Assert.Contains(FrontierChart.FrontName, html);
        foreach (var seed in Seeds)
            Assert.Contains($"interleaved, seed {seed}: SFT loss", html);
        Assert.Contains("interleaved, seed 1002: SFT loss 0.440, reward 0.970", html);
        // six means with both error bars (plotly's data error bars; the theme template has styled ones too)
        Assert.Equal(6, System.Text.RegularExpressions.Regex.Matches(html, "\"error_x\":\\{\"type\":\"data\"").Count);
        Assert.Equal(6, System.Text.RegularExpressions.Regex.Matches(html, "\"error_y\":\\{\"type\":\"data\"").Count);
        // interleaved's loss interval: mean 0.36667, t half-width 4.303 * sd / sqrt(3) = 0.174494
        Assert.Contains("\"array\":[0.17449", html);

        // the staircase: right to the next point's loss, then up to its reward
        var (xs, ys) = FrontierChart.Steps([(0.2, 0.4), (0.3, 0.6), (0.5, 0.9)]);
        Assert.Equal([0.2, 0.3, 0.3, 0.5, 0.5], xs);
        Assert.Equal([0.4, 0.4, 0.6, 0.6, 0.9], ys);
    }

    [Fact]
    public void The_report_opens_with_the_frontier_and_cites_only_the_methods_that_ran()
    {
        var html = Report.Render(Build(Results()), "test");
        int body = html.IndexOf("<body>", StringComparison.Ordinal);
        int first = html.IndexOf("Plotly.newPlot", body, StringComparison.Ordinal);
        int frontier = html.IndexOf("<h2>The decoupling frontier</h2>", body, StringComparison.Ordinal);
        Assert.True(frontier > body && frontier < first, "the frontier section comes before any chart");
        int second = html.IndexOf("Plotly.newPlot", first + 1, StringComparison.Ordinal);
        Assert.Contains("The decoupling frontier: mean over 3 seeds", html[frontier..second]);
        Assert.True(frontier < html.IndexOf("<h2>Predictions</h2>", StringComparison.Ordinal));
        // its table: one row per pipeline with the paired differences
        Assert.Contains("<th>Δ SFT loss vs sft-then-rl</th>", html);
        Assert.Contains("<tr><td>lenient-reward</td><td>control</td>", html);
        Assert.Contains("<td>not a candidate</td>", html);
        // the sentence once, with the chart, not again in the list of predictions
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(html, "Off the front: "));
        Assert.Contains("arXiv 2508.11408", html); // chord ran
        Assert.DoesNotContain("2504.14945", html); // luffy did not
        Assert.DoesNotContain("2203.02155", html); // nor sft-anchored
    }
}
