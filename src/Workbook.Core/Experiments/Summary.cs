// summary.json: per pipeline the changes the paper predicts (mean, 95% CI over seeds, per-seed values), the final values
// of every pipeline, C1(β) estimates, whether each prediction held, plain-word statements, and the curves the report plots.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Workbook.Experiments;

public static class Summary
{
    static JsonObject StatJson(Stat s) => new()
    {
        ["mean"] = Num(s.Mean), ["ci95"] = new JsonArray(Num(s.Ci95[0]), Num(s.Ci95[1])),
        ["per_seed"] = new JsonArray(s.PerSeed.Select(x => (JsonNode?)Num(x)).ToArray()),
    };

    static JsonNode? Num(double x) => double.IsFinite(x) ? JsonValue.Create(Math.Round(x, 6)) : null;

    /// <summary>Change of a metric over stage k of a pipeline, per seed: value at the stage's last evaluation minus its first.</summary>
    static double[] ChangeDuring(List<SeedResult> seeds, int stage, string key) => seeds.Select(r =>
    {
        var pts = r.Curve.Where(p => p.Stage == stage && p.Metrics.ContainsKey(key)).ToList();
        return pts.Count < 2 ? double.NaN : pts[^1].Metrics[key] - pts[0].Metrics[key];
    }).ToArray();

    static double[] Final(List<SeedResult> seeds, string key) =>
        seeds.Select(r => r.Curve.LastOrDefault(p => p.Metrics.ContainsKey(key))?.Metrics[key] ?? double.NaN).ToArray();

    static string F(double x) => x.ToString("+0.000;-0.000", CultureInfo.InvariantCulture);
    static string Abs(double x) => Math.Abs(x).ToString("0.000", CultureInfo.InvariantCulture);
    static string Ci(Stat s) => $"[{F(s.Ci95[0])}, {F(s.Ci95[1])}]";

    public static JsonObject Build(ExperimentConfig cfg, Dictionary<string, List<SeedResult>> results, string strictKey, string lenientKey,
        string design, IReadOnlyDictionary<string, string> versions, IReadOnlyList<long> seeds)
    {
        var pipes = new JsonObject();
        var held = new JsonObject();
        var statements = new JsonObject();
        foreach (var (name, rs) in results)
        {
            var o = new JsonObject();
            if (name == "sft-then-rl")
            {
                var loss = Stat.Of(ChangeDuring(rs, 1, "eval_sft_loss"));
                var reward = Stat.Of(ChangeDuring(rs, 1, strictKey));
                o["sft_loss_change_during_rl"] = StatJson(loss);
                o["sft_nll_per_response_change_during_rl"] = StatJson(Stat.Of(ChangeDuring(rs, 1, "eval_sft_nll_per_response")));
                o["reward_change_during_rl"] = StatJson(reward);
                o["lenient_reward_change_during_rl"] = StatJson(Stat.Of(ChangeDuring(rs, 1, lenientKey)));
                if (rs.All(r => r.C1 is not null)) o["c1_estimate"] = StatJson(Stat.Of(rs.Select(r => r.C1!.Value).ToArray()));
                held[name] = loss.AboveZero;
                statements[name] = (loss.AboveZero
                    ? $"Held: during GRPO after SFT the SFT loss on held-out expert data rose by {Abs(loss.Mean)} nats/token (95% CI {Ci(loss)}, {rs.Count} seeds)"
                    : $"Not shown: the SFT-loss change during GRPO after SFT was {F(loss.Mean)} nats/token (95% CI {Ci(loss)}, {rs.Count} seeds), an interval that does not exclude zero")
                    + $", while the strict reward changed by {F(reward.Mean)} (95% CI {Ci(reward)}).";
            }
            if (name == "rl-then-sft")
            {
                var reward = Stat.Of(ChangeDuring(rs, 1, strictKey));
                var lenient = Stat.Of(ChangeDuring(rs, 1, lenientKey));
                o["reward_change_during_sft"] = StatJson(reward);
                o["lenient_reward_change_during_sft"] = StatJson(lenient);
                o["sft_loss_change_during_sft"] = StatJson(Stat.Of(ChangeDuring(rs, 1, "eval_sft_loss")));
                o["reward_change_during_rl"] = StatJson(Stat.Of(ChangeDuring(rs, 0, strictKey)));
                held[name] = reward.BelowZero;
                statements[name] = (reward.BelowZero
                    ? $"Held: during SFT after GRPO the strict reward fell by {Abs(reward.Mean)} (95% CI of the change {Ci(reward)}, {rs.Count} seeds)"
                    : $"Not shown: the strict-reward change during SFT after GRPO was {F(reward.Mean)} (95% CI {Ci(reward)}, {rs.Count} seeds), an interval that does not exclude zero")
                    + $"; the lenient reward (last label, the paper's evaluation parse) changed by {F(lenient.Mean)} (95% CI {Ci(lenient)})"
                    + (reward.BelowZero && !lenient.BelowZero ? ": only the strict one falls, so this is the format half of the effect." : ".");
            }
            o["final_sft_loss"] = StatJson(Stat.Of(Final(rs, "eval_sft_loss")));
            o["final_reward"] = StatJson(Stat.Of(Final(rs, strictKey)));
            o["final_lenient_reward"] = StatJson(Stat.Of(Final(rs, lenientKey)));
            o["stages"] = JsonSerializer.SerializeToNode(rs[0].Stages.Select(s => new { s.Name, s.Kind, s.Start, s.Steps }));
            o["curves"] = new JsonArray(rs.Select(r => (JsonNode?)new JsonObject
            {
                ["seed"] = r.Seed,
                ["points"] = new JsonArray(r.Curve.Select(p => (JsonNode?)new JsonObject
                {
                    ["step"] = p.GlobalStep, ["stage"] = p.Stage, ["kind"] = p.Kind,
                    ["metrics"] = new JsonObject(p.Metrics.Select(kv => KeyValuePair.Create(kv.Key, Num(kv.Value)))),
                }).ToArray()),
            }).ToArray());
            pipes[name] = o;
        }
        return new JsonObject
        {
            ["pipelines"] = pipes,
            ["seeds"] = new JsonArray(seeds.Select(s => (JsonNode?)s).ToArray()),
            ["prediction_held"] = held,
            ["statements"] = statements,
            ["metric_keys"] = new JsonObject { ["sft_loss"] = "eval_sft_loss", ["reward"] = strictKey, ["lenient_reward"] = lenientKey },
            ["design"] = design,
            ["seed_selection"] = $"Budgets and learning rates were chosen on training seeds 1-3; the reported runs use seeds {string.Join(", ", seeds)}.",
            ["config"] = JsonNode.Parse(cfg.ToJson()),
            ["versions"] = JsonSerializer.SerializeToNode(versions),
        };
    }

    public static void Save(string runDir, JsonObject summary) =>
        AtomicFile.WriteAllText(Path.Combine(runDir, "summary.json"), summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
}
