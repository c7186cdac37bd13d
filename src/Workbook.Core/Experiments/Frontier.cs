// The decoupling frontier (issue 14): where each pipeline ends in the plane (final held-out SFT loss, final strict
// reward). Lower loss and higher reward are better; the non-decoupling result says no stage order gets both.
//  1. A pipeline's point per seed is Summary.FinalPoint (its last evaluation). Over seeds: the mean with a 95% CI,
//     Student-t for the loss (nats/token) and the bounded interval inside [0, 1] for the reward (Stat.Bounded).
//  2. The front is Pareto-optimal on the means: a candidate is off it when another has a loss <= and a reward >=, one
//     of them strictly. Equal points do not dominate each other, so tied points are on the front together. A
//     pipeline with a missing (NaN) mean is not a candidate.
//  3. Controls are not methods: each changes the reward, the SFT data or drops RL to test the theorem. They are
//     drawn (greyed) but are never candidates for the front (on_front false, role "control").
//  4. Against sft-then-rl: per-seed paired differences (pipelines share each seed's base model) of both coordinates,
//     a t interval for the loss and the bounded one in [-1, 1] for the reward (Stat.Paired). A coordinate is
//     "separated" when its interval excludes zero; PairedVerdict words it, as for the summary's comparisons.
// Any set of pipeline names works: names that are neither controls nor ExperimentConfig.Methods are pipelines.
using System.Globalization;
using System.Text.Json.Nodes;

namespace Workbook.Experiments;

public static class Frontier
{
    public const string Baseline = "sft-then-rl";

    /// <summary>"control", "method" (ExperimentConfig.Methods) or "pipeline" (anything else).</summary>
    public static string Role(string name) =>
        ExperimentConfig.Controls.Contains(name) ? "control"
        : ExperimentConfig.Methods.Contains(name) ? "method"
        : "pipeline";

    /// <summary>Which of the points (loss, reward) are Pareto-optimal (lower loss, higher reward), on the given
    /// values: true where no other point is at least as good on both and strictly better on one. NaN points are
    /// never on the front and dominate nothing.</summary>
    public static bool[] OnFront(IReadOnlyList<(double loss, double reward)> pts) =>
        pts.Select((p, i) => Ok(p) && DominatedBy(pts, i).Count == 0).ToArray();

    /// <summary>The indices of the points that dominate point i.</summary>
    public static List<int> DominatedBy(IReadOnlyList<(double loss, double reward)> pts, int i) =>
        Enumerable
            .Range(0, pts.Count)
            .Where(j =>
                j != i
                && Ok(pts[j])
                && pts[j].loss <= pts[i].loss
                && pts[j].reward >= pts[i].reward
                && (pts[j].loss < pts[i].loss || pts[j].reward > pts[i].reward)
            )
            .ToList();

    static bool Ok((double loss, double reward) p) => double.IsFinite(p.loss) && double.IsFinite(p.reward);

    /// <summary>summary.json's "frontier", and the "frontier" statement added to <paramref name="statements"/>; null
    /// when there are no results.</summary>
    public static JsonObject? Build(
        Dictionary<string, List<SeedResult>> results,
        string strictKey,
        JsonObject statements
    )
    {
        if (results.Count == 0)
            return null;
        var names = results.Keys.ToList();
        Dictionary<long, double> PerSeed(string name, string key) =>
            results[name].ToDictionary(r => r.Seed, r => Summary.Final([r], key)[0]);
        var loss = names.ToDictionary(n => n, n => Stat.Of(Summary.Final(results[n], "eval_sft_loss")));
        var reward = names.ToDictionary(n => n, n => Stat.Bounded(Summary.Final(results[n], strictKey), 0, 1));
        // the front is among the non-controls only
        var candidates = names.Where(n => Role(n) != "control").ToList();
        var pts = candidates.Select(n => (loss[n].Mean, reward[n].Mean)).ToList();
        var front = OnFront(pts);
        bool hasBase = results.ContainsKey(Baseline);

        var pipes = new JsonObject();
        var vs = new Dictionary<string, (Stat loss, Stat reward)>();
        foreach (var n in names)
        {
            int c = candidates.IndexOf(n);
            var o = new JsonObject
            {
                ["role"] = Role(n),
                ["seeds"] = new JsonArray(results[n].Select(r => (JsonNode?)r.Seed).ToArray()),
                ["final_sft_loss"] = Summary.StatJson(loss[n]),
                ["final_reward"] = Summary.StatJson(reward[n]),
                ["on_front"] = c >= 0 && front[c],
            };
            if (c >= 0 && !front[c])
                o["dominated_by"] = new JsonArray(
                    DominatedBy(pts, c).Select(j => (JsonNode?)JsonValue.Create(candidates[j])).ToArray()
                );
            if (hasBase && n != Baseline && SameSeeds(results[n], results[Baseline]))
            {
                var dl = Stat.Paired(PerSeed(n, "eval_sft_loss"), PerSeed(Baseline, "eval_sft_loss"));
                var dr = Stat.Paired(PerSeed(n, strictKey), PerSeed(Baseline, strictKey), (0, 1));
                vs[n] = (dl, dr);
                o["vs_sft_then_rl"] = new JsonObject
                {
                    ["final_sft_loss"] = Summary.StatJson(dl),
                    ["final_reward"] = Summary.StatJson(dr),
                    ["sft_loss_separated"] = dl.AboveZero || dl.BelowZero,
                    ["reward_separated"] = dr.AboveZero || dr.BelowZero,
                };
            }
            pipes[n] = o;
        }
        var onFront = candidates.Where((n, i) => front[i]).OrderBy(n => loss[n].Mean).ToList();
        int seeds = results.Values.Max(r => r.Count);
        statements["frontier"] = Statement(names, onFront, loss, reward, vs, pipes, seeds, hasBase);
        return new JsonObject
        {
            ["what"] =
                "Per pipeline, the final held-out SFT loss (eval_sft_loss, nats/token) against the final strict "
                + "reward, at each seed's last evaluation: mean with 95% CI over seeds (the reward's inside [0, 1]). "
                + "The front is Pareto-optimal on the means (lower loss, higher reward); controls are not candidates.",
            ["sft_loss_key"] = "eval_sft_loss",
            ["reward_key"] = strictKey,
            ["baseline"] = hasBase ? Baseline : null,
            ["front"] = new JsonArray(onFront.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray()),
            ["controls_note"] =
                $"Controls ({string.Join(", ", ExperimentConfig.Controls)}) are drawn greyed and are never on the "
                + "front: each changes the reward, the SFT data or drops RL to test the theorem, so none is a way to "
                + "post-train for the strict reward.",
            ["pipelines"] = pipes,
        };
    }

    static bool SameSeeds(List<SeedResult> a, List<SeedResult> b) =>
        a.Select(r => r.Seed).Order().SequenceEqual(b.Select(r => r.Seed).Order());

    static string F(double x) => x.ToString("0.000", CultureInfo.InvariantCulture);

    static string S(double x) =>
        Math.Round(x, 3) == 0 ? "+0.000" : x.ToString("+0.000;-0.000", CultureInfo.InvariantCulture);

    static string Ci(Stat s) => s.Interval(S);

    static string Point(string n, Dictionary<string, Stat> loss, Dictionary<string, Stat> reward) =>
        $"{n} (SFT loss {F(loss[n].Mean)}, reward {F(reward[n].Mean)})";

    static string Statement(
        List<string> names,
        List<string> onFront,
        Dictionary<string, Stat> loss,
        Dictionary<string, Stat> reward,
        Dictionary<string, (Stat loss, Stat reward)> vs,
        JsonObject pipes,
        int seeds,
        bool hasBase
    )
    {
        var s =
            $"Final held-out SFT loss (nats/token) against final strict reward, means over {seeds} seeds: "
            + (
                onFront.Count == 0
                    ? "no pipeline has both final values, so there is no front."
                    : $"on the front: {string.Join(", ", onFront.Select(n => Point(n, loss, reward)))}."
            );
        var off = names
            .Where(n => Role(n) != "control" && pipes[n]!["on_front"]!.GetValue<bool>() == false)
            .Select(n =>
                pipes[n]!["dominated_by"] is JsonArray by
                    ? $"{n} (dominated by {string.Join(", ", by.Select(x => x!.GetValue<string>()))})"
                    : $"{n} (no final value)"
            )
            .ToList();
        if (off.Count > 0)
            s += $" Off the front: {string.Join("; ", off)}.";
        if (!hasBase)
            s += $" {Baseline} did not run, so there are no paired differences against it.";
        else
        {
            s += onFront.Contains(Baseline) ? $" {Baseline} is on the front." : $" {Baseline} is off the front.";
            var diffs = names
                .Where(n => Role(n) != "control" && vs.ContainsKey(n))
                .Select(n =>
                {
                    var (dl, dr) = vs[n];
                    return $"{n}{(onFront.Contains(n) ? " (front)" : "")}: SFT loss {S(dl.Mean)} (95% CI {Ci(dl)}), "
                        + $"reward {S(dr.Mean)} (95% CI {Ci(dr)}), {PairedVerdict.Of(dl, dr)}";
                })
                .ToList();
            if (diffs.Count > 0)
                s += $" Against {Baseline}, paired by seed (pipeline minus {Baseline}): {string.Join("; ", diffs)}.";
        }
        var controls = names.Where(n => Role(n) == "control").ToList();
        if (controls.Count > 0)
            s +=
                $" Controls, drawn greyed and not candidates for the front (they test the theorem, they are not ways "
                + $"to post-train): {string.Join(", ", controls.Select(n => Point(n, loss, reward)))}.";
        return s;
    }
}
