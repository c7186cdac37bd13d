// summary.json's forgetting part (issue 14, §4): does moving away from the stage's start go with forgetting?
//  1. per pipeline, the change during the RL stage (the stage sft_loss_change_during_rl reads; rl-then-sft: its first
//     stage) of eval_kl_from_start, eval_entropy and, with forgetting_task, eval_other_task_sft_loss;
//  2. "forgetting": one point per evaluation of every GRPO stage after its first (x: the rise of the held-out SFT loss
//     since the stage's start, nats per response; y: KL from the stage's start, entropy, the other task's loss), with
//     real seeds, for the chart (Charts/ForgettingChart.cs);
// 3. per pipeline, Pearson's r of KL-from-start with the SFT-loss rise over those points, with a Fisher-z 95% interval.
//     That interval treats the evaluations as independent; successive evaluations of one run are not, and it mixes
//     seeds whose slopes differ; the statement says so. Beside it, the seeds as the sample: the mean of the per-seed
//     r with the bounded t interval every reward gets (Stat.Bounded on [-1, 1]), from 2 seeds with an r up. Under 3
//     points r is not reported (two points always give ±1): the statement says "undefined" and how many evaluations
//     there were.
using System.Globalization;
using System.Text.Json.Nodes;

namespace Workbook.Experiments;

public static class ForgettingSummary
{
    public const string Kl = "eval_kl_from_start",
        KlPerToken = "eval_kl_from_start_per_token",
        Entropy = "eval_entropy",
        Other = "eval_other_task_sft_loss",
        Rise = "eval_sft_nll_per_response";

    /// <summary>The stage whose changes are "during RL" for a pipeline, or null when it has none (interleaved,
    /// joint).</summary>
    public static int? RlStage(string pipeline) =>
        pipeline == "rl-then-sft" ? 0
        : pipeline == "sft-then-rl"
        || ExperimentConfig.Controls.Contains(pipeline)
        || ExperimentConfig.Methods.Contains(pipeline)
            ? 1
        : null;

    /// <summary>Adds kl_from_start_change_during_rl, entropy_change_during_rl and other_task_sft_loss_change_during_rl
    /// (where logged) to a pipeline's summary.</summary>
    public static void Changes(string pipeline, List<SeedResult> rs, JsonObject o)
    {
        if (RlStage(pipeline) is not { } stage)
            return;
        foreach (
            var (key, name) in new[]
            {
                (Kl, "kl_from_start_change_during_rl"),
                (KlPerToken, "kl_from_start_per_token_change_during_rl"),
                (Entropy, "entropy_change_during_rl"),
                (Other, "other_task_sft_loss_change_during_rl"),
            }
        )
        {
            var change = Summary.ChangeDuring(rs, stage, key);
            if (change.Any(double.IsFinite))
                o[name] = Summary.StatJson(Stat.Of(change));
        }
    }

    /// <summary>The points and correlations (file header, 2-3), and a computed statement; null when no GRPO stage
    /// logged eval_kl_from_start.</summary>
    public static JsonObject? Build(Dictionary<string, List<SeedResult>> results, JsonObject statements)
    {
        var points = new JsonObject();
        var corr = new JsonObject();
        var words = new List<string>();
        bool anyAcross = false;
        foreach (var (name, rs) in results)
        {
            var pts = Points(rs);
            if (pts.Count == 0)
                continue;
            points[name] = new JsonArray(
                pts.Select(p =>
                        (JsonNode?)
                            new JsonObject
                            {
                                ["seed"] = p.Seed,
                                ["stage"] = p.Stage,
                                ["step"] = p.Step,
                                ["sft_loss_rise"] = Summary.Num(p.Rise),
                                ["kl_from_start"] = Summary.Num(p.Kl),
                                ["kl_from_start_per_token"] = Summary.Num(p.KlPerToken),
                                ["entropy"] = Summary.Num(p.Entropy),
                                ["other_task_sft_loss"] = Summary.Num(p.Other),
                            }
                    )
                    .ToArray()
            );
            // counts are of the points the correlation used: an evaluation with a non-finite metric is left out
            var (r, lo, hi, n) = Pearson(pts.Select(p => p.Rise).ToArray(), pts.Select(p => p.Kl).ToArray());
            var perSeed = pts.GroupBy(p => p.Seed)
                .Select(g =>
                {
                    var c = Pearson(g.Select(p => p.Rise).ToArray(), g.Select(p => p.Kl).ToArray());
                    return (g.Key, c.R, c.N);
                })
                .ToList();
            corr[name] = new JsonObject
            {
                ["r"] = Summary.Num(r),
                ["ci95"] = new JsonArray(Summary.Num(lo), Summary.Num(hi)),
                ["n"] = n,
                ["seeds"] = perSeed.Count,
                ["per_seed_r"] = new JsonObject(
                    perSeed.Select(x => KeyValuePair.Create(x.Key.ToString(), Summary.Num(x.R)))
                ),
            };
            var seedRs = perSeed.Select(x => x.R).Where(double.IsFinite).ToArray();
            var across = seedRs.Length >= 2 ? Stat.Bounded(seedRs, -1, 1) : null;
            if (across is not null)
            {
                corr[name]!["across_seeds"] = Summary.StatJson(across);
                anyAcross = true;
            }
            string Seed((long Key, double R, int N) x) =>
                double.IsFinite(x.R) ? $"{x.Key}: {R2(x.R)}"
                : x.N < MinPoints ? $"{x.Key}: undefined ({Evals(x.N)})"
                : $"{x.Key}: undefined (no spread)";
            words.Add(
                double.IsFinite(r)
                    ? $"{name}: r = {R2(r)} (95% CI {(double.IsFinite(lo) ? $"[{R2(lo)}, {R2(hi)}]" : "n/a")}, "
                        + $"{Evals(n)} of {perSeed.Count} seeds; per seed "
                        + string.Join(", ", perSeed.Select(Seed))
                        + (
                            across is null
                                ? ""
                                : $"; across seeds {R2(across.Mean)}, 95% CI {across.Interval(R2)} "
                                    + $"over {seedRs.Length} seeds"
                        )
                        + ")"
                    : $"{name}: undefined ({Evals(n)} of {perSeed.Count} seeds"
                        + (n < MinPoints ? $"; a correlation needs at least {MinPoints})" : "; no spread)")
            );
        }
        if (points.Count == 0)
            return null;
        if (words.Count > 0)
            statements["forgetting"] =
                "Correlation of the KL from the RL stage's start (nats per response) with the rise of the held-out SFT "
                + "loss since that start, over the evaluations of each pipeline's GRPO stages: "
                + string.Join("; ", words)
                + ". The pooled interval (Fisher z) treats the evaluations as independent draws, which successive "
                + "evaluations of one run are not, and it mixes seeds whose slopes differ"
                + (
                    anyAcross
                        ? "; the one across seeds takes the seeds as the sample (the mean of the per-seed r, a t "
                            + "interval kept inside [-1, 1])."
                        : "; no pipeline has an r in two seeds, so there is no interval across seeds."
                );
        return new JsonObject
        {
            ["what"] =
                "per evaluation of a GRPO stage after its first: the held-out SFT-loss rise since the stage's start "
                + "(nats per response) against KL(p_start ‖ p_current) on held-out prompts (nats per response), the "
                + "policy's entropy (nats per token) and, with forgetting_task, the other task's held-out SFT loss",
            ["points"] = points,
            ["kl_vs_sft_loss_rise_correlation"] = corr,
        };
    }

    static string R2(double x) => x.ToString("0.00", CultureInfo.InvariantCulture);

    static string Evals(int n) => n == 1 ? "1 evaluation" : $"{n} evaluations";

    /// <summary>The fewest points r is reported from: through two points any line fits, so r is ±1 by
    /// construction.</summary>
    public const int MinPoints = 3;

    public sealed record Point(
        long Seed,
        int Stage,
        long Step,
        double Rise,
        double Kl,
        double KlPerToken,
        double Entropy,
        double Other
    );

    /// <summary>Every evaluation of every GRPO stage after the stage's first, relative to that first one.</summary>
    public static List<Point> Points(List<SeedResult> rs)
    {
        var list = new List<Point>();
        double Get(EvalPoint p, string k) => p.Metrics.TryGetValue(k, out var v) ? v : double.NaN;
        foreach (var r in rs)
        foreach (var g in r.Curve.Where(p => p.Kind == "grpo").GroupBy(p => p.Stage))
        {
            var pts = g.ToList();
            if (pts.Count < 2 || !pts[0].Metrics.ContainsKey(Kl))
                continue;
            foreach (var p in pts.Skip(1))
                list.Add(
                    new Point(
                        r.Seed,
                        g.Key,
                        p.GlobalStep,
                        Get(p, Rise) - Get(pts[0], Rise),
                        Get(p, Kl),
                        Get(p, KlPerToken),
                        Get(p, Entropy),
                        Get(p, Other)
                    )
                );
        }
        return list;
    }

    /// <summary>Pearson's r with a Fisher-z 95% interval over the pairs where both are finite, and how many those
    /// are (NaN r under 3 such points or when either has no spread; NaN interval under 4).</summary>
    public static (double R, double Lo, double Hi, int N) Pearson(double[] x, double[] y)
    {
        var ok = Enumerable.Range(0, x.Length).Where(i => double.IsFinite(x[i]) && double.IsFinite(y[i])).ToArray();
        int n = ok.Length;
        if (n < MinPoints)
            return (double.NaN, double.NaN, double.NaN, n);
        double mx = ok.Average(i => x[i]),
            my = ok.Average(i => y[i]);
        double sxy = ok.Sum(i => (x[i] - mx) * (y[i] - my)),
            sxx = ok.Sum(i => (x[i] - mx) * (x[i] - mx)),
            syy = ok.Sum(i => (y[i] - my) * (y[i] - my));
        if (sxx <= 0 || syy <= 0)
            return (double.NaN, double.NaN, double.NaN, n);
        double r = Math.Clamp(sxy / Math.Sqrt(sxx * syy), -1, 1);
        if (n < 4)
            return (r, double.NaN, double.NaN, n);
        double z = Math.Atanh(Math.Clamp(r, -1 + 1e-12, 1 - 1e-12)),
            h = 1.959964 / Math.Sqrt(n - 3);
        return (r, Math.Tanh(z - h), Math.Tanh(z + h), n);
    }
}
