using System.Diagnostics;
using System.Text.Json.Nodes;
using Workbook.Experiments;
using Workbook.Reports;
using Workbook.Training;

namespace Workbook.Tests;

/// <summary>Issue 14 §3: the GRPO stop rule — its grammar, the estimator and the decision on synthetic trajectories
/// with known rates, Φ/hindsight/ratio arithmetic, config validation before any run folder, and the rule inside a GRPO
/// stage (it decides as a replay of its own logged evaluations, stops the stage, and resumes exactly).</summary>
public class StopRuleTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    [Theory]
    [InlineData("sft_loss_rise > 0.2", StopKind.Budget, 0.2)]
    [InlineData("  SFT_LOSS_RISE>0.2 ", StopKind.Budget, 0.2)]
    [InlineData("sft_loss_rise > 1e-1", StopKind.Budget, 0.1)]
    [InlineData("dJ < 0.5*dL_SFT", StopKind.Marginal, 0.5)]
    [InlineData("dJ<0.5·dL_SFT", StopKind.Marginal, 0.5)]
    [InlineData("dJ < 2 * dL_SFT", StopKind.Marginal, 2.0)]
    [InlineData("dJ < dL_SFT", StopKind.Marginal, 1.0)]
    public void Rules_parse(string text, StopKind kind, double threshold)
    {
        var r = StopRule.Parse(text, "grpo.stop_when");
        Assert.Equal(kind, r.Kind);
        Assert.Equal(threshold, r.Threshold, 12);
    }

    [Theory]
    [InlineData("")]
    [InlineData("dJ > 0.5*dL_SFT")]
    [InlineData("sft_loss_rise < 0.2")]
    [InlineData("sft_loss_rise > -0.2")]
    [InlineData("sft_loss_rise > abc")]
    [InlineData("dJ < 0.5 dL_SFT")]
    [InlineData("reward > 0.9")]
    public void Bad_rules_name_the_option_and_the_grammar(string text)
    {
        var e = Assert.Throws<WorkbookException>(() => StopRule.Parse(text, "grpo.stop_when"));
        Assert.Contains("grpo.stop_when", e.Message);
        Assert.Contains("sft_loss_rise > δ", e.Message);
        Assert.Contains("dJ < λ*dL_SFT", e.Message);
        var o = Assert.Throws<WorkbookException>(() => new GrpoOptions { StopWhen = text, MaxSteps = 40 }.Validate());
        Assert.Contains("grpo.stop_when", o.Message);
    }

    [Fact]
    public void Grpo_options_refuse_a_cadence_without_two_checks_and_hindsight_without_a_rule()
    {
        var e = Assert.Throws<WorkbookException>(() =>
            new GrpoOptions
            {
                StopWhen = "dJ < dL_SFT",
                StopCheckSteps = 30,
                MaxSteps = 40,
            }.Validate()
        );
        Assert.Contains("stop_check_steps", e.Message);
        e = Assert.Throws<WorkbookException>(() => new GrpoOptions { StopCheckSteps = 0 }.Validate());
        Assert.Contains("stop_check_steps", e.Message);
        e = Assert.Throws<WorkbookException>(() => new GrpoOptions { StopHindsight = true }.Validate());
        Assert.Contains("stop_hindsight", e.Message);
        new GrpoOptions
        {
            StopWhen = "dJ < dL_SFT",
            StopCheckSteps = 20,
            MaxSteps = 40,
        }.Validate();
    }

    [Fact]
    public void The_fit_recovers_a_quadratic_and_a_line_exactly()
    {
        double[] u = [-3, -2, -1, 0];
        var c = StopEstimator.Fit(u, u.Select(x => 0.5 - 0.25 * x + 0.125 * x * x).ToList(), 2);
        Assert.Equal([0.5, -0.25, 0.125], c.Select(v => Math.Round(v, 12)));
        // least squares through non-collinear points: y = 0, 1, 1 at u = 0, 1, 2 -> slope 1/2, intercept 2/3 − 1/2
        var l = StopEstimator.Fit([0, 1, 2], [0, 1, 1], 1);
        Assert.Equal(1.0 / 6, l[0], 12);
        Assert.Equal(0.5, l[1], 12);
    }

    // J(t) = a t − b t², L(t) = L0 + c t: the marginal gain J'(t) − λ L'(t) = a − 2bt − λc
    // is zero at t* = (a − λc)/(2b).
    static List<StopEval> Quadratic(double a, double b, double c, int k, int planned) =>
        Enumerable
            .Range(0, planned / k + 1)
            .Select(i => i * k)
            .Select(t => new StopEval(t, 0.3 + a * t - b * t * t, 1.0 + c * t))
            .ToList();

    [Fact]
    public void The_marginal_rule_predicts_the_known_step_and_fires_at_the_first_check_past_it()
    {
        // a = 0.02, b = 0.0005, λc = 0.0025: t* = 0.0175 / 0.001 = 17.5 -> first integer step 18; checks every 4 of 40
        var evals = Quadratic(0.02, 0.0005, 0.0025, 4, 40);
        var rule = StopRule.Parse("dJ < 1*dL_SFT", "x");
        var checks = StopEstimator.Replay(rule, evals, 40, 4);
        // step 4: two evaluations, a line: constant gain (J(4) − J(0))/4 − c = 0.018 − 0.0025 > 0, no crossing
        Assert.Equal(4, checks[0].Step);
        Assert.Equal(40, checks[0].PredictedStep);
        Assert.False(checks[0].Fire);
        Assert.Equal(0.018, checks[0].RateJ, 9);
        Assert.Equal(0.0025, checks[0].RateL, 9);
        // steps 8..16: the quadratic fit is exact, so the prediction is t* = 18, logged before the rule gets there
        foreach (var ch in checks.Where(x => x.Step is >= 8 and <= 16))
        {
            Assert.Equal(18, ch.PredictedStep);
            Assert.False(ch.Fire);
            Assert.Equal(0.02 - 2 * 0.0005 * ch.Step, ch.RateJ, 9);
        }
        // fires at 20, the first check with J'(t) ≤ λ L'(t); the replay stops there
        Assert.Equal(20, checks[^1].Step);
        Assert.True(checks[^1].Fire);
        Assert.Equal(20, checks[^1].PredictedStep);
        // λ = 3: t* = (0.02 − 0.0075)/0.001 = 12.5 -> 13; J'(12) − λL'(12) = 0.0005 > 0, so it fires at the check at 16
        var c3 = StopEstimator.Replay(StopRule.Parse("dJ < 3*dL_SFT", "x"), evals, 40, 4);
        Assert.Equal(16, c3[^1].Step);
        Assert.True(c3[^1].Fire);
        Assert.Equal(13, c3[^2].PredictedStep);
    }

    [Fact]
    public void Patience_needs_the_condition_at_consecutive_checks_and_the_best_step_is_the_measured_argmax()
    {
        var rule = StopRule.Parse("dJ < 1*dL_SFT", "x");
        // the plain rule fires at 20 on the saturating trajectory; with patience 2 the check at 16 did not hold, so 24
        var evals = Quadratic(0.02, 0.0005, 0.0025, 4, 40);
        Assert.Equal(20, StopEstimator.FiringStep(rule, evals, 40, 4));
        Assert.Equal(24, StopEstimator.FiringStep(rule, evals, 40, 4, patience: 2));
        Assert.Equal(28, StopEstimator.FiringStep(rule, evals, 40, 4, patience: 3));
        // on a noisy trajectory, patience p fires exactly where the plain condition holds at this check and the p − 1
        // before it
        var rng = new Random(7);
        var noisy = Enumerable
            .Range(0, 11)
            .Select(i => new StopEval(4 * i, 0.3 * (1 - Math.Exp(-i / 3.0)) + 0.05 * rng.NextDouble(), 0.02 * i))
            .ToList();
        bool Raw(int n) => n >= 2 && StopEstimator.Check(rule, noisy.Take(n).ToList(), 40, 4).Fire;
        int differ = 0;
        for (int n = 2; n <= noisy.Count; n++)
        {
            var prefix = noisy.Take(n).ToList();
            Assert.Equal(Raw(n) && Raw(n - 1), StopEstimator.Check(rule, prefix, 40, 4, 2).Fire);
            Assert.Equal(Raw(n) && Raw(n - 1) && Raw(n - 2), StopEstimator.Check(rule, prefix, 40, 4, 3).Fire);
            differ += Raw(n) != StopEstimator.Check(rule, prefix, 40, 4, 2).Fire ? 1 : 0;
        }
        Assert.True(differ > 0, "the trajectory never separates patience 1 from 2");
        // a budget rule is a constraint: patience does not delay it
        var budget = StopRule.Parse("sft_loss_rise > 0.05", "x");
        var rising = Enumerable.Range(0, 6).Select(i => new StopEval(4 * i, 0, 0.02 * i)).ToList();
        Assert.Equal(
            StopEstimator.FiringStep(budget, rising, 40, 4),
            StopEstimator.FiringStep(budget, rising, 40, 4, patience: 3)
        );
        // the best step: argmax of Φ = ΔJ − λΔL up to the firing step, earliest on ties, step 0 (Φ = 0) included
        var e = new List<StopEval> { new(0, 0.5, 1.0), new(4, 0.7, 1.1), new(8, 0.8, 1.1), new(12, 0.8, 1.1) };
        Assert.Equal(8, StopEstimator.BestStep(rule, e, 12)); // Φ: 0, 0.1, 0.2, 0.2
        Assert.Equal(4, StopEstimator.BestStep(rule, e, 4)); // nothing after the firing step counts
        Assert.Equal(0, StopEstimator.BestStep(StopRule.Parse("dJ < 5*dL_SFT", "x"), e, 12)); // Φ < 0 after 0
        // under a budget Φ (= ΔJ) is undefined past δ: a step outside it is never the best
        var b = new List<StopEval> { new(0, 0.5, 1.0), new(4, 0.7, 1.1), new(8, 0.9, 1.3), new(12, 0.8, 1.1) };
        Assert.Equal(12, StopEstimator.BestStep(StopRule.Parse("sft_loss_rise > 0.15", "x"), b, 12));
    }

    [Fact]
    public void The_budget_rule_stops_before_the_check_that_would_cross()
    {
        // L rises 0.01 per step; δ = 0.155 is crossed at t = 15.5 -> first integer step 16
        var evals = Quadratic(0.01, 0, 0.01, 4, 40);
        var checks = StopEstimator.Replay(StopRule.Parse("sft_loss_rise > 0.155", "x"), evals, 40, 4);
        Assert.Equal(16, checks[0].PredictedStep); // from two points: the line is exact too
        Assert.False(checks[0].Fire); // but a fitted crossing needs three evaluations
        Assert.Equal(16, checks[1].PredictedStep);
        Assert.False(checks[1].Fire); // at 8 the crossing (16) is after the next check (12)
        Assert.Equal(12, checks[^1].Step); // at 12 the next check (16) would be over the budget: stop, rise 0.12
        Assert.True(checks[^1].Fire);
        // a flat SFT loss never crosses: the prediction is the budget and the rule never fires
        var flat = StopEstimator.Replay(
            StopRule.Parse("sft_loss_rise > 0.155", "x"),
            Quadratic(0.01, 0, 0, 4, 40),
            40,
            4
        );
        Assert.All(flat, ch => Assert.Equal(40, ch.PredictedStep));
        Assert.DoesNotContain(flat, ch => ch.Fire);
        // a measured rise over the budget fires at once, even at the first check
        var jump = new List<StopEval> { new(0, 0.3, 1.0), new(4, 0.3, 1.5) };
        Assert.True(StopEstimator.Check(StopRule.Parse("sft_loss_rise > 0.2", "x"), jump, 40, 4).Fire);
    }

    [Fact]
    public void Phi_hindsight_and_the_ratio_match_hand_arithmetic()
    {
        List<StopEval> evals = [new(0, 0.5, 1.0), new(4, 0.6, 1.02), new(8, 0.68, 1.06), new(12, 0.7, 1.14)];
        // λ = 1: Φ = 0, 0.08, 0.12, 0.06 -> hindsight 8 (0.12); stopped at 12: 0.06 / 0.12 = 0.5
        var h = StopHindsight.Of(StopRule.Parse("dJ < 1*dL_SFT", "x"), evals, 12);
        Assert.Equal(8, h.HindsightStep);
        Assert.Equal(0.12, h.PhiHindsight, 12);
        Assert.Equal(0.06, h.PhiStopped, 12);
        Assert.Equal(0.5, h.Ratio!.Value, 12);
        Assert.Equal([0, 0.08, 0.12, 0.06], h.Curve.Select(c => Math.Round(c.Phi, 12)));
        // budget δ = 0.05: feasible steps 0 (Φ 0) and 4 (ΔL 0.02, Φ 0.1); 8 and 12 are over budget
        var b = StopHindsight.Of(StopRule.Parse("sft_loss_rise > 0.05", "x"), evals, 4);
        Assert.Equal(4, b.HindsightStep);
        Assert.Equal(1.0, b.Ratio!.Value, 12);
        Assert.Null(StopHindsight.Of(StopRule.Parse("sft_loss_rise > 0.05", "x"), evals, 12).Ratio); // broke the budget
        // a reward that only falls: Φ(hindsight) = Φ(0) = 0, the ratio is undefined (never divided)
        List<StopEval> falling = [new(0, 0.5, 1.0), new(4, 0.4, 1.0), new(8, 0.3, 1.1)];
        var f = StopHindsight.Of(StopRule.Parse("dJ < 1*dL_SFT", "x"), falling, 8);
        Assert.Equal(0, f.HindsightStep);
        Assert.Null(f.Ratio);
    }

    [Fact]
    public void The_summary_replays_the_rule_at_other_trade_offs_over_the_same_evaluations()
    {
        // a saturating reward J = 0.5 + 0.3(1 − e^(−t/8)) and a loss rising 0.01 per step, checked every 4 of 48
        // steps; one seed's reward only falls, so at every λ its ratio is undefined
        List<StopEval> Saturating(double scale) =>
            Enumerable
                .Range(0, 13)
                .Select(i => new StopEval(4 * i, 0.5 + scale * 0.3 * (1 - Math.Exp(-4 * i / 8.0)), 1 + 0.01 * 4 * i))
                .ToList();
        List<StopEval> falling = [.. Enumerable.Range(0, 13).Select(i => new StopEval(4 * i, 0.5 - 0.01 * i, 1.0))];
        StopRun Run(List<StopEval> e) => new("dJ < 1*dL_SFT", 4, 48, false, null, 48, e);
        var runs = new[] { Saturating(1), Saturating(0.8), Saturating(1.2), falling };
        var results = new Dictionary<string, List<SeedResult>>
        {
            ["guarded"] = [.. runs.Select((e, i) => new SeedResult(i + 1, [], [], null) { Stop = Run(e) })],
        };
        var statements = new JsonObject();
        var by = Summary.StopRuleJson(results, statements)!["by_lambda"]!.AsArray();
        Assert.Equal(Summary.ReplayLambdas, by.Select(x => x!["lambda"]!.GetValue<double>()));
        foreach (var row in by)
        {
            var rule = new StopRule(StopKind.Marginal, row!["lambda"]!.GetValue<double>(), "x");
            for (int i = 0; i < runs.Length; i++)
            {
                // each replay is the rule's own decision and hindsight on that seed's evaluations
                var checks = StopEstimator.Replay(rule, runs[i], 48, 4);
                long stop = checks.Count > 0 && checks[^1].Fire ? checks[^1].Step : 48;
                var h = StopHindsight.Of(rule, runs[i], stop);
                Assert.Equal(stop, row["predicted_step"]![i]!.GetValue<long>());
                Assert.Equal(h.HindsightStep, row["hindsight_step"]![i]!.GetValue<long>());
                var r = row["phi_ratio"]!["per_seed"]![i];
                Assert.Equal(h.Ratio is null, r is null);
                if (h.Ratio is { } ratio)
                    Assert.Equal(ratio, r!.GetValue<double>(), 5); // the JSON keeps 6 decimals
            }
            Assert.Equal(3, row["defined_seeds"]!.GetValue<int>()); // the falling seed never has a ratio
        }
        // at λ 2, Φ = ΔJ − 0.02·t peaks where 0.3/8·e^(−t/8) = 0.02, t ≈ 5: the check step 4 for the first seed
        // (scale 1)
        Assert.Equal(4, by[^1]!["hindsight_step"]![0]!.GetValue<long>());
        var text = statements["stop rule"]!.GetValue<string>();
        Assert.Contains("Replayed over the same evaluations at other trade-offs", text);
        Assert.Contains("(3 of 4 seeds)", text);
        Assert.Contains("At no λ is the goal of 0.9 on the mean met", text); // the fourth seed is never defined
        var steps = by.Select(x => string.Join(",", x!["predicted_step"]!.AsArray().Select(v => (long)v!))).ToList();
        Assert.Equal(steps[0] == steps[1], text.Contains("the trade-off did not change when the rule stopped"));
    }

    [Fact]
    public void The_summary_reports_the_ratio_per_seed_and_says_where_it_is_undefined()
    {
        StopRun Run(long stopped, params StopEval[] e) => new("dJ < 1*dL_SFT", 4, stopped, true, 4, 12, [.. e]);
        StopEval[] good = [new(0, 0.5, 1.0), new(4, 0.6, 1.02), new(8, 0.68, 1.06), new(12, 0.7, 1.14)];
        StopEval[] bad = [new(0, 0.5, 1.0), new(4, 0.4, 1.0), new(8, 0.3, 1.1), new(12, 0.3, 1.2)];
        var results = new Dictionary<string, List<SeedResult>>
        {
            ["guarded"] =
            [
                new SeedResult(1, [], [], null) { Stop = Run(8, good) }, // ratio 1
                new SeedResult(2, [], [], null) { Stop = Run(12, good) }, // ratio 0.5
                new SeedResult(3, [], [], null) { Stop = Run(8, bad) }, // undefined
            ],
        };
        var statements = new JsonObject();
        var s = Summary.StopRuleJson(results, statements)!;
        Assert.Equal([8L, 12, 8], s["predicted_step"]!.AsArray().Select(x => x!.GetValue<long>()));
        Assert.Equal([8L, 8, 0], s["hindsight_step"]!.AsArray().Select(x => x!.GetValue<long>()));
        var ratio = s["phi_ratio"]!;
        Assert.Equal(0.75, ratio["mean"]!.GetValue<double>(), 9);
        var per = ratio["per_seed"]!.AsArray();
        Assert.Equal(1.0, per[0]!.GetValue<double>(), 9);
        Assert.Equal(0.5, per[1]!.GetValue<double>(), 9);
        Assert.Null(per[2]);
        var text = statements["stop rule"]!.GetValue<string>();
        Assert.Contains("0.75", text);
        Assert.Contains("2 of 3 seeds", text);
        Assert.Contains("below the goal of 0.9", text);
        Assert.Contains("Undefined in seed(s) 3", text);
        // one seed at ratio 1 does not meet a goal weighed only from 3 seeds
        var one = new JsonObject();
        Summary.StopRuleJson(new() { ["guarded"] = [results["guarded"][0]] }, one);
        Assert.Contains(
            "at or above 0.9 on the mean, from too few seeds to weigh against the goal",
            one["stop rule"]!.GetValue<string>()
        );
        // the report renders the section and its chart
        var html = Report.Render(
            new JsonObject
            {
                ["pipelines"] = new JsonObject(),
                ["statements"] = statements.DeepClone(),
                ["stop_rule"] = s.DeepClone(),
            },
            "t"
        );
        Assert.Contains("Stop rule against hindsight", html);
        Assert.Contains("hindsight argmax (step 8)", html);
        Assert.Null(Summary.StopRuleJson(new() { ["sft-then-rl"] = [new SeedResult(1, [], [], null)] }, statements));
    }

    [Fact]
    public void On_fresh_prompts_the_kept_step_and_both_controls_are_shares_of_the_best_phi_there()
    {
        var rule = new StopRule(StopKind.Marginal, 1, "dJ < 1*dL_SFT");
        // Φ = ΔJ − ΔL at steps 0, 4, 8, 12: 0, 0.10, 0.20, 0.05 (best at 8)
        StopEval[] fresh = [new(0, 0.5, 1.0), new(4, 0.62, 1.02), new(8, 0.75, 1.05), new(12, 0.70, 1.15)];
        var c = StopConfirm.Of(rule, fresh, kept: 4, hindsight: 12)!;
        Assert.Equal(8, c.BestStep);
        Assert.Equal(0.20, c.PhiBest, 12);
        Assert.Equal(0.5, c.Kept!.Value, 12);
        Assert.Equal(0.25, c.Hindsight!.Value, 12);
        Assert.Equal(0.25, c.FullBudget!.Value, 12); // the last step is 12 here too
        Assert.Equal(2.0, c.KeptOverHindsight!.Value, 12);
        // Φ never rises on the fresh prompts: no ratio; no evaluation at the kept step or none at all: nothing
        StopEval[] flat = [new(0, 0.5, 1.0), new(4, 0.5, 1.1), new(8, 0.4, 1.1)];
        var none = StopConfirm.Of(rule, flat, 4, 8)!;
        Assert.Null(none.Kept);
        Assert.Null(none.FullBudget);
        Assert.Null(StopConfirm.Of(rule, fresh, 6, 8));
        Assert.Null(StopConfirm.Of(rule, [], 4, 8));
        // a budget: the step past it has no Φ, so its share is null while the others are defined
        var budget = new StopRule(StopKind.Budget, 0.1, "sft_loss_rise > 0.1");
        var b = StopConfirm.Of(budget, fresh, 4, 8)!;
        Assert.Equal(0.12 / 0.25, b.Kept!.Value, 12);
        Assert.Equal(1.0, b.Hindsight!.Value, 12);
        Assert.Null(b.FullBudget); // step 12 rose 0.15 > 0.1
    }

    [Fact]
    public void The_summary_scores_the_kept_model_on_fresh_prompts_beside_its_controls()
    {
        StopEval[] seen = [new(0, 0.5, 1.0), new(4, 0.6, 1.02), new(8, 0.68, 1.06), new(12, 0.7, 1.14)];
        StopEval[] fresh1 = [new(0, 0.5, 1.0), new(4, 0.58, 1.02), new(8, 0.60, 1.05), new(12, 0.62, 1.14)];
        StopEval[] fresh2 = [new(0, 0.5, 1.0), new(4, 0.54, 1.02), new(8, 0.66, 1.06), new(12, 0.66, 1.12)];
        StopRun Run(StopEval[] f) =>
            new("dJ < 1*dL_SFT", 4, 8, true, 4, 12, [.. seen])
            {
                RestoreBest = true,
                ResultStep = 4,
                Confirm = [.. f],
            };
        var results = new Dictionary<string, List<SeedResult>>
        {
            ["guarded"] =
            [
                new SeedResult(1, [], [], null) { Stop = Run(fresh1) },
                new SeedResult(2, [], [], null) { Stop = Run(fresh2) },
            ],
        };
        var statements = new JsonObject();
        var c = Summary.StopRuleJson(results, statements)!["confirm"]!;
        // seed 1: Φ 0, 0.06, 0.05, −0.02 → kept (4) 1, hindsight on the seen prompts (8) 0.05/0.06, last step < 0
        // seed 2: Φ 0, 0.02, 0.10, 0.04 → kept 0.2, hindsight 1, last step 0.4
        double[] Per(string k) => [.. c[k]!["per_seed"]!.AsArray().Select(v => v!.GetValue<double>())];
        Assert.Equal([1.0, 0.2], Per("phi_ratio"), (a, b) => Math.Abs(a - b) < 1e-5);
        Assert.Equal([0.05 / 0.06, 1.0], Per("hindsight_on_rule_prompts_ratio"), (a, b) => Math.Abs(a - b) < 1e-5);
        Assert.Equal([-0.02 / 0.06, 0.4], Per("full_budget_ratio"), (a, b) => Math.Abs(a - b) < 1e-5);
        Assert.Equal(0.6, c["phi_ratio"]!["mean"]!.GetValue<double>(), 5);
        Assert.Equal([0.06 / 0.05, 0.2], Per("kept_over_hindsight"), (a, b) => Math.Abs(a - b) < 1e-5);
        Assert.Equal(2, c["defined_seeds"]!.GetValue<int>());
        Assert.Equal(8.0, c["mean_stopped_step"]!.GetValue<double>());
        var text = statements["stop rule"]!.GetValue<string>();
        Assert.Contains("On fresh prompts the rule never saw (2 of 2 seeds", text);
        Assert.Contains("0.70 (95% CI", text); // Φ(kept)/Φ(hindsight step): (1.2 + 0.2)/2
        Assert.Contains("2 of 2 seeds defined, too few to weigh against the goal of 0.9", text);
        Assert.Contains("on the fresh prompts, with both steps scored there, at no λ.", text);
        Assert.Contains("not separated from zero", text); // kept − last step: +1.33 and −0.2
        Assert.Contains("fired at step 8 of 12", text);
        // the replays carry the same three shares per λ
        var atOne = Summary.StopRuleJson(results, new JsonObject())!["by_lambda"]!
            .AsArray()
            .Single(x => x!["lambda"]!.GetValue<double>() == 1)!;
        Assert.NotNull(atOne["confirm_phi_ratio"]);
        Assert.NotNull(atOne["confirm_full_budget_ratio"]);
    }

    [Fact]
    public void Fresh_prompts_come_after_the_held_out_rows_and_a_dataset_that_cannot_give_them_is_refused()
    {
        var cfg = ExperimentTests.Tiny;
        var task = Workbook.Data.TaskRegistry.Create(cfg.Dataset, cfg.DatasetSeed, cfg.Task);
        var fresh = ExperimentConfig.ConfirmExamples(cfg, task);
        Assert.Equal(cfg.Guarded.ConfirmSize, fresh.Count);
        var seen = task.Train.Concat(task.Eval).Select(e => e.PromptText).ToHashSet();
        Assert.DoesNotContain(fresh, e => seen.Contains(e.PromptText));
        Assert.Equal(fresh.Count, fresh.Select(e => e.PromptText).Distinct().Count());
        cfg.ValidateFor(["guarded"]);
        // CoLA's held-out rows are cut from the training file: more of them would change the training rows
        var cola = cfg with
        {
            Dataset = $"cola:{Path.Combine(TestData.Shared, "datasets", "cola", "train.tsv")}",
        };
        var e = Assert.Throws<WorkbookException>(() => cola.ValidateFor(["guarded"]));
        Assert.Contains("guarded.confirm_size", e.Message);
        cola.ValidateFor(["sft-then-rl"]); // only the guarded pipeline needs them
        (cola with { Guarded = cola.Guarded with { ConfirmSize = 0 } }).ValidateFor(["guarded"]);
        e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, ["guarded.confirm_size=-1"]));
        Assert.Contains("guarded.confirm_size", e.Message);
    }

    [Fact]
    public void Run_config_validates_the_guarded_rule_and_refuses_a_global_grpo_rule()
    {
        var e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, ["guarded.stop_when=dJ > 3"]));
        Assert.Contains("guarded.stop_when", e.Message);
        e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, ["guarded.stop_check_steps=0"]));
        Assert.Contains("guarded.stop_check_steps", e.Message);
        e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, ["grpo.stop_when=dJ < dL_SFT"]));
        Assert.Contains("guarded.stop_when", e.Message);
        var ok = ExperimentConfig.Load(null, ["guarded.stop_when=sft_loss_rise > 0.1", "guarded.stop_check_steps=30"]);
        ok.ValidateFor(["sft-then-rl"]); // the cadence only matters when guarded runs
        e = Assert.Throws<WorkbookException>(() => ok.ValidateFor(["guarded"]));
        Assert.Contains("guarded.stop_check_steps", e.Message);
    }

    [Fact]
    public void A_bad_rule_on_the_command_line_fails_before_any_run_folder_exists()
    {
        var runs = TestData.TempDir();
        var psi = new ProcessStartInfo(
            "dotnet",
            [
                Path.Combine(AppContext.BaseDirectory, "workbook.dll"),
                "run",
                "guarded",
                "--quick",
                "--runs",
                runs,
                "--set",
                "guarded.stop_when=dJ > 3",
            ]
        )
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000));
        Assert.Equal(2, p.ExitCode);
        Assert.Contains("guarded.stop_when", err.Result);
        Assert.Empty(Directory.Exists(runs) ? Directory.GetFileSystemEntries(runs) : []);
    }

    static GrpoOptions Tiny(bool hindsight) =>
        TrainerRuns.TinyGrpo() with
        {
            StopWhen = "dJ < 1000*dL_SFT",
            StopCheckSteps = 2,
            StopHindsight = hindsight,
            SaveSteps = 2,
        };

    Evaluator Eval() =>
        new(fx.Codec, fx.Task.Eval.Take(8).ToList(), fx.Task.EvalVerifiers, new EvalOptions { MaxNewTokens = 8 });

    /// <summary>The evaluations a stop rule checked every 2 steps sees: (step, J, L) from the stage's log.</summary>
    static List<StopEval> CheckEvals(IEnumerable<System.Text.Json.Nodes.JsonObject> rows, string jKey) =>
        rows.Where(r => r.ContainsKey("eval_sft_loss") && r["step"]!.GetValue<long>() % 2 == 0)
            .Select(r => new StopEval(
                r["step"]!.GetValue<long>(),
                r[jKey]!.GetValue<double>(),
                r["eval_sft_loss"]!.GetValue<double>()
            ))
            .ToList();

    static List<string> Lines(string dir) =>
        MetricsLog
            .Read(Path.Combine(dir, "metrics.jsonl"))
            .Select(o =>
            {
                foreach (
                    var k in o.Select(kv => kv.Key).Where(k => k.Contains("tim") || k.Contains("per_second")).ToList()
                )
                    o.Remove(k);
                return o.ToJsonString();
            })
            .ToList();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Restore_best_keeps_the_best_evaluated_model_up_to_the_firing_step_and_resumes_exactly(bool hindsight)
    {
        var o = Tiny(hindsight) with { StopWhen = "dJ < 0.001*dL_SFT", StopPatience = 2, StopRestoreBest = true };
        var rule = StopRule.Parse(o.StopWhen, "x");
        var dir = TestData.TempDir();
        var tr = new GrpoTrainer(fx.NewModel(5), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir, Eval());
        tr.Train();
        var rows = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl"));
        var evals = CheckEvals(rows, tr.StopRewardKey);
        // the same firing as the replay with patience, and the best step as the estimator's over what the rule saw
        Assert.Equal(StopEstimator.FiringStep(rule, evals, o.MaxSteps, 2, 2), tr.StoppedAt);
        Assert.Equal(StopEstimator.BestStep(rule, evals, tr.StoppedAt ?? o.MaxSteps), tr.BestStep);
        // the result is that step's model, byte for byte (the start model when RL never beat it)
        Assert.True(tr.KeepBestAtEnd());
        var kept = Path.Combine(dir, GrpoTrainer.StoppedModelDir, "model.safetensors");
        var best = Path.Combine(dir, $"stop-best-{tr.BestStep}", "model.safetensors");
        Assert.Equal(File.ReadAllBytes(best), File.ReadAllBytes(kept));
        tr.DropBestCandidates();
        Assert.Empty(Directory.GetDirectories(dir, "stop-best-*"));
        // killed after step 5 and resumed from the checkpoint at 4: the same decisions and the same result
        var dir2 = TestData.TempDir();
        var t2 = new GrpoTrainer(fx.NewModel(5), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir2, Eval());
        t2.CrashAfter(Math.Min(5, tr.StoppedAt is { } at && !hindsight ? at : 5));
        Assert.Throws<OperationCanceledException>(() => t2.Train());
        var t3 = new GrpoTrainer(fx.NewModel(5), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir2, Eval());
        t3.Train(resume: true);
        Assert.Equal(Lines(dir), Lines(dir2));
        Assert.Equal((tr.StoppedAt, tr.BestStep), (t3.StoppedAt, t3.BestStep));
        Assert.True(t3.KeepBestAtEnd());
        Assert.Equal(
            File.ReadAllBytes(kept),
            File.ReadAllBytes(Path.Combine(dir2, GrpoTrainer.StoppedModelDir, "model.safetensors"))
        );
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void In_a_grpo_stage_the_rule_decides_as_its_replay_stops_the_stage_and_resumes_exactly(bool hindsight)
    {
        var o = Tiny(hindsight);
        var dir = TestData.TempDir();
        var tr = new GrpoTrainer(fx.NewModel(5), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir, Eval());
        var state = tr.Train();
        var rows = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl"));
        var evals = CheckEvals(rows, tr.StopRewardKey);
        var logged = rows.Where(r => r.ContainsKey("stop_rule/predicted_step")).ToList();
        var replay = StopEstimator.Replay(StopRule.Parse(o.StopWhen, "x"), evals, o.MaxSteps, o.StopCheckSteps);
        Assert.NotEmpty(logged);
        Assert.Equal(replay.Count, logged.Count); // one logged check per replayed check, none after firing
        for (int i = 0; i < replay.Count; i++)
        {
            Assert.Equal(replay[i].Step, logged[i]["step"]!.GetValue<long>());
            Assert.Equal(replay[i].PredictedStep, logged[i]["stop_rule/predicted_step"]!.GetValue<double>());
            Assert.Equal(replay[i].Fire ? 1.0 : 0.0, logged[i]["stop_rule/fired"]!.GetValue<double>());
        }
        bool fired = replay[^1].Fire;
        Assert.Equal(fired ? replay[^1].Step : null, tr.StoppedAt);
        if (fired && !hindsight)
        {
            Assert.Equal(tr.StoppedAt, state.Step); // the stage ended at the stopping step, checkpointed there
            Assert.DoesNotContain(rows, r => r["step"]!.GetValue<long>() > tr.StoppedAt);
        }
        else
            Assert.Equal(o.MaxSteps, state.Step);
        Assert.Equal(fired && hindsight, Directory.Exists(Path.Combine(dir, GrpoTrainer.StoppedModelDir)));
        // killed after step 3 (or at the stopping step 2, after its checkpoint), resumed from the checkpoint at 2:
        // the same log, line for line, and the same decision
        long kill = Math.Min(3, tr.StoppedAt is { } at && !hindsight ? at : 3);
        var dir2 = TestData.TempDir();
        var t2 = new GrpoTrainer(fx.NewModel(5), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir2, Eval());
        t2.CrashAfter(kill);
        Assert.Throws<OperationCanceledException>(() => t2.Train());
        var t3 = new GrpoTrainer(fx.NewModel(5), fx.Codec, fx.Task.Train, fx.Task.Reward, o, dir2, Eval());
        t3.Train(resume: true);
        Assert.Equal(Lines(dir), Lines(dir2));
        Assert.Equal(tr.StoppedAt, t3.StoppedAt);
        Assert.Equal(tr.PredictedBeforeStop, t3.PredictedBeforeStop);
    }
}
