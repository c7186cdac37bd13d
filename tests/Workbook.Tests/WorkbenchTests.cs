using System.Text.Json.Nodes;
using Workbook.Experiments;
using Workbook.Reports;
using Workbook.Theory;

namespace Workbook.Tests;

/// <summary>The notebooks' result sentences, on constructed inputs that flip each conclusion.</summary>
public class WorkbenchTests
{
    [Fact]
    public void Quick_mode_is_parsed_strictly()
    {
        Assert.True(Workbench.ParseQuick("1"));
        Assert.False(Workbench.ParseQuick("0"));
        Assert.False(Workbench.ParseQuick(null));
        Assert.False(Workbench.ParseQuick(""));
        var e = Assert.Throws<WorkbookException>(() => Workbench.ParseQuick("yes"));
        Assert.Contains("WORKBOOK_QUICK", e.Message);
    }

    [Fact]
    public void The_paper_scale_step_trains_the_folder_s_model_in_its_own_vocabulary()
    {
        // a full-vocabulary folder stands in for Qwen3-0.6B: ModelSetup loads it and its tokenizer, Qwen3's ids
        var dir = Path.Combine(TestData.Golden, "tiny-qwen3-bf16");
        // a tiny model is quick in bf16 on any CPU: the step runs where the paper's shape would be refused
        var r = Workbench.PaperScaleStep(dir, learningRate: 1e-2, allowSlowBf16: true);
        Assert.Equal(dir, r["model"]);
        Assert.Equal(Model.Qwen3Config.Load(Path.Combine(dir, "config.json")).ParameterCount(), r["parameters"]);
        double before = (double)r["sft_loss_before"],
            after = (double)r["sft_loss_after_one_step"];
        Assert.True(after < before, $"one step on the example lowers its loss: {before} -> {after}");
        var said = (string)r["statement"];
        Assert.Contains(
            $"the example's loss fell by {before - after:0.0000}, from {before:0.0000} to {after:0.0000}",
            said
        );
        if (Devices.MissingBf16Flags().Count > 0)
        {
            var refused = Workbench.PaperScaleStep(dir, learningRate: 1e-2);
            Assert.Equal("not run", refused["sft_step"]);
            Assert.False(refused.ContainsKey("sft_loss_after_one_step"));
            Assert.Contains("its bf16 SFT step was not run: this CPU lacks avx512", (string)refused["statement"]);
        }
    }

    static JsonArray Arr(IEnumerable<double?> xs) =>
        new(xs.Select(x => x is null ? null : (JsonNode?)x.Value).ToArray());

    static JsonObject Finals(params (string name, double[] loss, double?[] reward)[] pipes) =>
        new()
        {
            ["seeds"] = new JsonArray(1000L, 1001L, 1002L),
            ["pipelines"] = new JsonObject(
                pipes.Select(p =>
                    KeyValuePair.Create(
                        p.name,
                        (JsonNode?)
                            new JsonObject
                            {
                                ["final_sft_loss"] = new JsonObject
                                {
                                    ["per_seed"] = Arr(p.loss.Select(x => (double?)x)),
                                },
                                ["final_reward"] = new JsonObject { ["per_seed"] = Arr(p.reward) },
                            }
                    )
                )
            ),
        };

    [Fact]
    public void Tradeoffs_are_computed_from_paired_seeds()
    {
        // the stage orders trade off; interleaved beats both on both axes; joint is indistinguishable from sft-then-rl.
        // Every paired difference has some spread: a zero-width interval would separate nothing (StatisticsTests).
        var s = Finals(
            ("sft-then-rl", [0.50, 0.60, 0.55], [0.90, 0.80, 0.85]),
            ("rl-then-sft", [0.41, 0.49, 0.45], [0.50, 0.41, 0.45]),
            ("interleaved", [0.30, 0.41, 0.34], [0.95, 0.87, 0.90]),
            ("joint", [0.52, 0.58, 0.55], [0.88, 0.83, 0.84])
        );
        var lines = Workbench.Tradeoffs(s);
        void Has(string start, string end) => Assert.Contains(lines, l => l.StartsWith(start) && l.EndsWith(end));
        // the verdict is PairedVerdict's, the summary's and the frontier's wording (a = the first-named pipeline)
        Has("sft-then-rl against rl-then-sft", "the CIs separate both (higher SFT loss, higher reward): a trade-off.");
        Has(
            "interleaved against sft-then-rl",
            "the CIs separate both (lower SFT loss, higher reward): better on both."
        );
        Has(
            "interleaved against rl-then-sft",
            "the CIs separate both (lower SFT loss, higher reward): better on both."
        );
        Has("joint against sft-then-rl", "the CIs separate neither coordinate.");
        foreach (var line in lines.Where(l => l.Contains(" against ")))
        {
            var names = line[..line.IndexOf(" (paired")].Split(" against ");
            var (dl, dr) = Workbench.Compare(s, names[0], names[1]);
            Assert.EndsWith($": {PairedVerdict.Of(dl, dr)}.", line);
        }
        Has("interleaved: final SFT loss 0.350", ".");
        // the same pipelines with the stage orders not trading off: sft-then-rl better on both
        var flipped = Finals(
            ("sft-then-rl", [0.30, 0.40, 0.35], [0.90, 0.80, 0.85]),
            ("rl-then-sft", [0.41, 0.49, 0.45], [0.50, 0.41, 0.45])
        );
        Assert.Contains(
            Workbench.Tradeoffs(flipped),
            l => l.StartsWith("sft-then-rl against rl-then-sft") && l.EndsWith(": better on both.")
        );
        // a missing seed (null) is left out of the pairing, not treated as zero
        var missing = Finals(
            ("sft-then-rl", [0.30, 0.40, 0.35], [0.90, null, 0.85]),
            ("rl-then-sft", [0.40, 0.50, 0.45], [0.50, 0.40, 0.45])
        );
        var (_, reward) = Workbench.Compare(missing, "sft-then-rl", "rl-then-sft");
        Assert.Equal(0.40, reward.Mean, 10);
        Assert.True(double.IsNaN(reward.PerSeed[1]));
        // per-seed lists that do not match the seeds are an error, not a silent misalignment
        var bad = Finals(("sft-then-rl", [0.3, 0.4], [0.9, 0.8]), ("rl-then-sft", [0.4, 0.5], [0.5, 0.4]));
        Assert.Throws<WorkbookException>(() => Workbench.Tradeoffs(bad));
    }

    static LandscapeResult Softmax(
        double[] sftGap,
        double[] objGap,
        int tMeasured,
        double tPredicted,
        int upper = 0,
        int contraction = 0
    ) =>
        new(
            1,
            0.1,
            2,
            0.2,
            0.5,
            0.1,
            sftGap.Select((g, t) => new RlTrajectoryPoint(t, g, objGap[t], 0, 0, 1.0, 0)).ToList(),
            tMeasured,
            tPredicted,
            1.0,
            contraction,
            upper
        );

    [Fact]
    public void Landscape_conclusions_flip_with_the_numbers()
    {
        var ok = new Landscape.ThresholdCheck(400, 50, 0, 0, 120);
        var rising = Workbench.LandscapeConclusions(Softmax([0, 0.1, 0.2], [1, 0.5, 0.2], 1, 1.4), ok);
        Assert.StartsWith("After 2 RL steps the SFT loss rose by 0.2000 (within its smoothness bound", rising[0]);
        Assert.Contains("the RL objective gap fell by 0.8000", rising[0]);
        Assert.StartsWith("Both bounds held", rising[1]);
        Assert.EndsWith(
            "Both say stop early; the prediction maximises a loose lower bound, " + "1.40 times the measured T*.",
            rising[2]
        );
        var atOnce = Workbench.LandscapeConclusions(Softmax([0, 0.1, 0.2], [1, 0.5, 0.2], 1, 0.3), ok);
        Assert.EndsWith(
            "Both say stop early, the prediction (which maximises a loose lower bound) " + "before the first step.",
            atOnce[2]
        );
        Assert.Contains(
            "the SFT loss fell every time; the SFT gap exceeded the gap the condition implies every time.",
            rising[3]
        );

        var falling = Workbench.LandscapeConclusions(
            Softmax([0.3, 0.2, 1.5], [0.1, 0.2, 0.3], 2, double.NaN, upper: 1, contraction: 2),
            new Landscape.ThresholdCheck(400, 50, 3, 4, 120)
        );
        Assert.Contains("the SFT loss rose by 1.2000 (above its smoothness bound", falling[0]);
        Assert.Contains("the RL objective gap rose by 0.2000", falling[0]);
        Assert.Equal("Bound violations over 3 points: smoothness 1, PL contraction 2.", falling[1]);
        Assert.Contains("the last step run: Φ was still rising", falling[2]);
        Assert.Contains("no prediction", falling[2]);
        Assert.EndsWith("They do not both say stop early.", falling[2]);
        Assert.Contains("did not fall at 3 of them", falling[3]);
        Assert.Contains("below the gap the condition implies at 4 of them", falling[3]);

        var down = Workbench.LandscapeConclusions(
            Softmax([0.3, 0.2, 0.1], [1, 0.5, 0.2], 1, 5.0),
            new Landscape.ThresholdCheck(400, 0, 0, 0, 7)
        );
        Assert.Contains("the SFT loss fell by 0.2000", down[0]);
        Assert.Contains("beyond the 2 steps run", down[2]);
        Assert.Contains("held at none of 400 points, so this run does not test it", down[3]);
    }

    static TransformerLandscapeResult Transformer(
        double lastLoss,
        double bound,
        double measuredFinal,
        double predictedFinal,
        bool lastLowered,
        MisalignmentCheck start
    )
    {
        var steps = new[]
        {
            new TransformerStep(0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, false, false),
            new TransformerStep(30, lastLoss, 0, 0, 0, 0, 0, 0, 0, bound, 0, false, false),
        };
        var threshold = new[]
        {
            new ThresholdPoint(0, 0.5, 0.3, 0.1, true, true, 0.2),
            new ThresholdPoint(200, 1e-6, -0.1, 0.1, false, lastLowered, 1),
        };
        return new TransformerLandscapeResult(
            1000,
            0.5,
            1.0,
            0.9,
            1e-6,
            1,
            1,
            0.1,
            1,
            0.1,
            0.5,
            steps,
            0,
            0,
            0,
            0,
            0,
            0,
            10,
            12,
            0.25,
            predictedFinal,
            measuredFinal,
            0.4,
            120,
            start,
            start,
            threshold
        );
    }

    [Fact]
    public void Transformer_conclusions_flip_with_the_numbers()
    {
        var up = Workbench.TransformerConclusions(
            Transformer(1.2, 0.5, 0.3, 0.25, false, new MisalignmentCheck(-0.9, -0.9, 0.1, 0.8, 0.9))
        );
        Assert.Equal(
            "Transformer: after 30 RL steps the SFT loss rose by 0.200 " + "(within the estimated-ℓ_S bound 0.500).",
            up[0]
        );
        Assert.Contains("change was +0.300; the tilted optimum predicts +0.250, so measured/predicted = 1.20.", up[1]);
        Assert.Contains("lowered the SFT loss from 1 of 2 SFT snapshots (SFT gaps 0.500)", up[2]);
        Assert.EndsWith("it raised it.", up[2]);
        Assert.EndsWith("informative, and it held.", up[3]);

        var down = Workbench.TransformerConclusions(
            Transformer(0.9, 0.05, -0.1, 0.25, true, new MisalignmentCheck(0.5, 0.5, 0.1, 0.8, 0.9))
        );
        Assert.Contains("the SFT loss fell by 0.100 (within the estimated-ℓ_S bound 0.050)", down[0]);
        Assert.Contains("measured/predicted = -0.40", down[1]);
        Assert.EndsWith("it lowered it.", down[2]);
        Assert.EndsWith("informative, and it failed: the measured |cos| is below it.", down[3]);

        var vacuous = Workbench.TransformerConclusions(
            Transformer(1.2, 0.1, 0.3, 0.25, false, new MisalignmentCheck(0.1, 0.1, 0.7, -0.4, 0.3))
        );
        Assert.Contains("above the estimated-ℓ_S bound 0.100", vacuous[0]);
        Assert.Contains("vacuous", vacuous[3]);
    }

    /// <summary>Four pipelines over three seeds through the real Summary.Build: the sentences and the charts read the
    /// schema it writes (per-seed order, seed numbers, stage names).</summary>
    [Fact]
    public void Tradeoffs_and_charts_read_the_summary_schema()
    {
        const string strict = "eval_rewards/strict/mean",
            lenient = "eval_rewards/lenient/mean";
        long[] seeds = [1000, 1001, 1002];
        SeedResult Result(long seed, double loss, double reward) =>
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
                                ["eval_sft_loss"] = loss + 0.1 * (2 - i),
                                ["eval_sft_nll_per_response"] = 10 * loss,
                                [strict] = reward * i / 2,
                                [lenient] = reward,
                            }
                        )),
                ],
                null
            );
        // interleaved: lower final loss and higher final reward than sft-then-rl on every seed
        var results = new Dictionary<string, List<SeedResult>>
        {
            ["sft-then-rl"] = [.. seeds.Select((s, k) => Result(s, 0.50 + 0.05 * k, 0.80 + 0.02 * k))],
            ["rl-then-sft"] = [.. seeds.Select((s, k) => Result(s, 0.40 + 0.04 * k, 0.40 + 0.03 * k))],
            ["interleaved"] = [.. seeds.Select((s, k) => Result(s, 0.30 + 0.05 * k + 0.01 * k * k, 0.90 + 0.03 * k))],
            ["joint"] = [.. seeds.Select((s, k) => Result(s, 0.50 + 0.04 * k, 0.81 + 0.01 * k))],
        };
        var cfg = ExperimentConfig.Load(null, []);
        var summary = Summary.Build(cfg, results, strict, lenient, "design", new Dictionary<string, string>(), seeds);
        var lines = Workbench.Tradeoffs(summary);
        Assert.Contains(
            lines,
            l =>
                l.StartsWith("interleaved against sft-then-rl")
                && l.EndsWith("(lower SFT loss, higher reward): better on both.")
        );
        Assert.Contains(lines, l => l.StartsWith("sft-then-rl against rl-then-sft") && l.Contains("a trade-off"));
        var html = Workbook.Charts.CurveCharts.Html(Workbook.Charts.CurveCharts.Pipeline(summary, "joint").reward);
        foreach (var s in seeds)
            Assert.Contains($"seed {s}\"", html);
        Assert.Contains("\"rl\"", html);
        Assert.Contains("95% CI of the mean over 3 seeds", html);
    }
}
