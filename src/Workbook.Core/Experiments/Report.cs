// report.html from a run folder's summary.json: the design and why it produces each effect, the predictions and whether
// they held, a results table, loss and reward curves per pipeline (seed bands, stage boundaries), config, versions.
// Self-contained: plotly.js is inlined, so the file renders offline. Written atomically.
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Charts;

namespace Workbook.Experiments;

public static class Report
{
    public static string Write(string runDir)
    {
        var summaryPath = Path.Combine(runDir, "summary.json");
        if (!File.Exists(summaryPath))
            throw new WorkbookException(
                $"{runDir}: no summary.json (the run has not finished; resume it with --resume)"
            );
        JsonObject s;
        try
        {
            s = JsonNode.Parse(File.ReadAllText(summaryPath))!.AsObject();
        }
        catch (JsonException e)
        {
            throw new WorkbookException($"{summaryPath}: unreadable ({e.Message})");
        }
        var html = Render(s, Path.GetFileName(runDir.TrimEnd('/')));
        var path = Path.Combine(runDir, "report.html");
        AtomicFile.WriteAllText(path, html);
        return path;
    }

    static string E(string? x) => WebUtility.HtmlEncode(x ?? "");

    static string Cell(JsonNode? stat)
    {
        if (stat is null)
            return "<td>–</td>";
        string F(JsonNode? n) =>
            n is null ? "n/a" : n.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        var ci = stat["ci95"]!.AsArray();
        return $"<td>{F(stat["mean"])} <span class=ci>[{F(ci[0])}, {F(ci[1])}]</span></td>";
    }

    /// <summary>The stop rule against hindsight on the same runs (summary.json "stop_rule").</summary>
    static void StopRuleSection(StringBuilder sb, JsonObject s)
    {
        if (s["stop_rule"] is not JsonObject st)
            return;
        string F(JsonNode? n) =>
            n is null ? "undefined" : n.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        sb.Append("<h2>Stop rule against hindsight</h2><p>")
            .Append(
                $"The {E(st["pipeline"]?.GetValue<string>())} pipeline's GRPO stage evaluates every {st["check_steps"]} "
            )
            .Append(
                "steps and stops when its rule fires; it then trains on to the full budget only to measure, on the same "
            )
            .Append("run, where stopping would have been best. ")
            .Append(E(st["phi"]?.GetValue<string>()))
            .Append(".</p><p>")
            .Append(E(st["statement"]?.GetValue<string>()))
            .Append("</p><table><tr><th>seed</th><th>stopped at</th><th>hindsight step</th><th>Φ stopped</th>")
            .Append("<th>Φ hindsight</th><th>ratio</th></tr>");
        foreach (var p in st["per_seed"]!.AsArray())
            sb.Append($"<tr><td>{p!["seed"]}</td><td>{p["predicted_step"]}</td><td>{p["hindsight_step"]}</td>")
                .Append(
                    $"<td>{F(p["phi_predicted"])}</td><td>{F(p["phi_hindsight"])}</td><td>{F(p["phi_ratio"])}</td></tr>"
                );
        sb.Append("</table>").Append(CurveCharts.Html(StopRuleCharts.Phi(st)));
    }

    public static string Render(JsonObject s, string title)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>")
            .Append(E(title))
            .Append("</title><style>")
            .Append("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}")
            .Append(
                "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
            )
            .Append(
                "td:first-child{text-align:left}.ci{color:#777;font-size:90%}.held{color:#176a17;font-weight:600}.not{color:#a33;font-weight:600}"
            )
            .Append(
                "pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:85%}.charts{display:flex;flex-wrap:wrap;gap:8px}</style>"
            )
            .Append(CurveCharts.PlotlyScriptTag())
            .Append("</head><body>");
        sb.Append("<h1>SFT and RL do not decouple: ").Append(E(title)).Append("</h1>");
        sb.Append(
                "<p>Reproduction of <i>On the Non-decoupling of Supervised Fine-tuning and Reinforcement Learning in Post-training</i> (arXiv 2601.07389): "
            )
            .Append(
                "RL after SFT raises the SFT loss, and SFT after RL lowers the reward RL reached. Theorem 3.1's identity: if RL reaches the KL-regularised optimum "
            )
            .Append(
                "p* ∝ p<sub>ref</sub>·e<sup>r/β</sup>, the SFT loss on expert data changes by E<sub>x</sub> log E<sub>p<sub>ref</sub></sub> e<sup>r/β</sup> − E<sub>x</sub> E<sub>p<sub>data</sub></sub> r/β "
            )
            .Append(
                "nats per response, which is ≥ 0 when p<sub>ref</sub> = p<sub>data</sub> and 0 when the reward is constant on what the expert writes. "
            )
            .Append(
                "Each result below has a prediction, a measurement of the same quantity, and controls under which the theorem predicts no rise.</p>"
            );
        sb.Append("<h2>Predictions</h2><ul>");
        var held = s["prediction_held"]?.AsObject() ?? new JsonObject();
        foreach (var (name, st) in s["statements"]?.AsObject() ?? new JsonObject())
        {
            var text = st?.GetValue<string>() ?? "";
            foreach (var prefix in new[] { "Held: ", "Not shown: " })
                if (text.StartsWith(prefix))
                    text = char.ToUpperInvariant(text[prefix.Length]) + text[(prefix.Length + 1)..];
            if (held[name] is null)
            {
                sb.Append($"<li><b>{E(name)}</b>: {E(text)}</li>");
                continue;
            }
            bool ok = held[name]!.GetValue<bool>();
            sb.Append(
                $"<li><b>{E(name)}</b>: <span class={(ok ? "held" : "not")}>{(ok ? "held" : "not shown")}</span>. {E(text)}</li>"
            );
        }
        sb.Append("</ul>");
        sb.Append("<h2>Design</h2><p>")
            .Append(E(s["design"]?.GetValue<string>()))
            .Append("</p><p>")
            .Append(E(s["seed_selection"]?.GetValue<string>()))
            .Append("</p>");

        var pipes = s["pipelines"]!.AsObject();
        sb.Append(
            "<h2>Results</h2><p>Mean over seeds with a 95% interval (Student-t; for rewards kept inside their range). Changes are measured between the first and last evaluation of the stage.</p><table><tr><th>quantity</th>"
        );
        foreach (var (name, _) in pipes)
            sb.Append($"<th>{E(name)}</th>");
        sb.Append("</tr>");
        foreach (
            var (key, label) in new[]
            {
                ("sft_loss_change_during_rl", "Δ SFT loss during RL (nats/token)"),
                ("sft_nll_per_response_change_during_rl", "Δ SFT loss during RL (nats/response)"),
                ("reward_change_during_rl", "Δ strict reward during RL"),
                ("reward_change_during_sft", "Δ strict reward during SFT"),
                ("lenient_reward_change_during_sft", "Δ lenient reward during SFT"),
                ("sft_loss_change_during_sft", "Δ SFT loss during SFT"),
                ("final_sft_loss", "final SFT loss"),
                ("final_reward", "final strict reward"),
                ("final_lenient_reward", "final lenient reward"),
            }
        )
        {
            if (!pipes.Any(p => p.Value![key] is not null))
                continue;
            sb.Append($"<tr><td>{E(label)}</td>");
            foreach (var (_, p) in pipes)
                sb.Append(Cell(p![key]));
            sb.Append("</tr>");
        }
        sb.Append("</table>");
        if (pipes["sft-then-rl"]?["prediction"] is JsonObject pr)
        {
            sb.Append("<h2>Predicted against measured (SFT then RL)</h2><p>")
                .Append(E(pr["what"]?.GetValue<string>()))
                .Append(
                    $". P(r=1|x) from {pr["samples_per_prompt"]} samples of the SFT policy on each of {pr["prompts"]} held-out prompts "
                )
                .Append("(plug-in, biased low by Jensen: under 5% of log Z for P ≥ 0.3 at k = 16); the expert term ")
                .Append(E(pr["expert_reward_source"]?.GetValue<string>()))
                .Append(".</p><table><tr><th>quantity</th><th>mean [95% CI]</th><th>per seed</th></tr>");
            foreach (
                var (key, label) in new[]
                {
                    ("predicted", "predicted ΔL_SFT (nats/response)"),
                    ("measured", "measured ΔL_SFT (nats/response)"),
                    ("ratio_measured_over_predicted", "ratio measured / predicted"),
                    ("sft_policy_success_rate", "SFT policy's P(r = 1)"),
                }
            )
                sb.Append(
                    $"<tr><td>{E(label)}</td>{Cell(pr[key])}<td>{E(pr[key]?["per_seed"]?.ToJsonString())}</td></tr>"
                );
            sb.Append("</table>");
        }
        if (s["controls"] is JsonObject controls)
        {
            sb.Append(
                    "<h2>Controls</h2><p>Same base models, seeds and budgets. Under each, the theorem predicts no SFT-loss rise: "
                )
                .Append(
                    "<b>lenient-reward</b> (RL with the lenient reward, which every expert response earns), <b>no-format-mix</b> (SFT data with "
                )
                .Append(
                    "the strict line only), <b>fresh-optimizer</b> (SFT continued with a fresh AdamW for the RL budget). Paired differences are per seed.</p>"
                )
                .Append("<table><tr><th>quantity</th><th>sft-then-rl</th>");
            foreach (var (name, _) in controls)
                sb.Append($"<th>{E(name)}</th>");
            sb.Append("</tr>");
            foreach (
                var (key, label) in new[]
                {
                    ("sft_loss_change_during_rl", "Δ SFT loss during the RL budget (nats/token)"),
                    ("sft_nll_per_response_change_during_rl", "Δ SFT loss (nats/response)"),
                    ("reward_change_during_rl", "Δ strict reward"),
                    ("main_minus_control_sft_loss_change", "main − control, Δ SFT loss (paired, nats/token)"),
                }
            )
            {
                sb.Append($"<tr><td>{E(label)}</td>").Append(Cell(pipes["sft-then-rl"]?[key]));
                foreach (var (_, c) in controls)
                    sb.Append(Cell(c![key]));
                sb.Append("</tr>");
            }
            sb.Append("<tr><td>predicted ΔL_SFT (nats/response)</td>")
                .Append(Cell(pipes["sft-then-rl"]?["prediction"]?["predicted"]));
            foreach (var (_, c) in controls)
                sb.Append(Cell(c!["prediction"]?["predicted"]));
            sb.Append("</tr></table>");
        }
        if (pipes["sft-then-rl"]?["sft_nll_change_during_rl_by_form_and_span"] is JsonObject split)
        {
            sb.Append(
                    "<h2>Where the rise sits</h2><p>Change during RL of the held-out SFT loss, by expert-response form and span "
                )
                .Append(
                    "(nats per response of that form; the answer span includes &lt;|im_end|&gt;).</p><table><tr><th>form / span</th><th>Δ (nats/response)</th></tr>"
                );
            foreach (var (k, v) in split)
                sb.Append($"<tr><td>{E(k)}</td>{Cell(v)}</tr>");
            sb.Append("</table>");
        }
        if (s["comparisons"] is JsonObject comps)
        {
            sb.Append(
                "<h2>Paired comparisons</h2><table><tr><th>pair</th><th>Δ final SFT loss</th><th>Δ final strict reward</th></tr>"
            );
            foreach (var (k, v) in comps)
                sb.Append($"<tr><td>{E(k)}</td>{Cell(v!["final_sft_loss"])}{Cell(v["final_reward"])}</tr>");
            sb.Append("</table>");
        }

        StopRuleSection(sb, s); // issue 14 §3
        sb.Append("<h2>Curves</h2>");
        foreach (var (name, _) in pipes)
        {
            var (loss, reward) = CurveCharts.Pipeline(s, name);
            sb.Append($"<h3>{E(name)}</h3><div class=charts>")
                .Append(CurveCharts.Html(loss))
                .Append(CurveCharts.Html(reward))
                .Append("</div>");
        }
        sb.Append("<h2>Configuration</h2><pre>")
            .Append(E(s["config"]?.ToJsonString(new JsonSerializerOptions { WriteIndented = true })))
            .Append("</pre>");
        sb.Append("<h2>Versions</h2><pre>")
            .Append(E(s["versions"]?.ToJsonString(new JsonSerializerOptions { WriteIndented = true })))
            .Append("</pre>");
        sb.Append("</body></html>");
        return sb.ToString();
    }
}

public static class SweepReport
{
    /// <summary>sweep.html beside sweep.json: the charts, the computed statements and a table per point.</summary>
    public static string Write(string runDir, JsonObject sweep)
    {
        string E(string? x) => WebUtility.HtmlEncode(x ?? "");
        string S(JsonNode? st) =>
            st is null ? "–" : $"{St(st["mean"])} <span class=ci>[{St(st["ci95"]?[0])}, {St(st["ci95"]?[1])}]</span>";
        string St(JsonNode? n) =>
            n is null ? "n/a" : n.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>sweep</title><style>")
            .Append("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}")
            .Append(
                "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            )
            .Append(
                "th{background:#f4f4f4}.ci{color:#777;font-size:90%}pre{background:#f7f7f7;padding:1em;overflow:auto}</style>"
            )
            .Append(CurveCharts.PlotlyScriptTag())
            .Append("</head><body>");
        sb.Append("<h1>Dose-response: predicted against measured SFT-loss rise</h1>");
        sb.Append(
                "<p>SFT then RL with the KL in the reward (kl_mode = reward, scale_rewards = none), whose optimum is "
            )
            .Append(
                "p* ∝ p<sub>SFT</sub>·e<sup>r/β</sup>. Theorem 3.1 then predicts ΔL<sub>SFT</sub> = E<sub>x</sub> log(1 + P(r=1|x)(e<sup>1/β</sup> − 1)) − "
            )
            .Append(
                "E<sub>p<sub>data</sub></sub> r/β nats per response, with P estimated from the SFT policy's own samples. "
            )
            .Append(
                "The twin runs SFT again after RL; the strict reward should return to the expert data's own reward.</p><ul>"
            );
        foreach (var st in sweep["statements"]!.AsArray())
            sb.Append("<li>").Append(E(st!.GetValue<string>())).Append("</li>");
        sb.Append("</ul>").Append(CurveCharts.Html(SweepCharts.Rise(sweep)));
        if (sweep["points"]!.AsArray().Any(p => p!["twin"] is not null))
            sb.Append(CurveCharts.Html(SweepCharts.Twin(sweep)));
        sb.Append("<table><tr><th>β</th><th>loose fraction</th><th>predicted ΔL</th><th>measured ΔL</th><th>ratio</th>")
            .Append("<th>reward reached</th><th>reward at p*</th><th>twin: predicted</th><th>twin: measured</th></tr>");
        foreach (var p in sweep["points"]!.AsArray())
            sb.Append(
                    $"<tr><td>{p!["beta"]}</td><td>{p["loose_format_fraction"]}</td><td>{S(p["predicted"])}</td><td>{S(p["measured"])}</td>"
                )
                .Append(
                    $"<td>{S(p["ratio"])}</td><td>{S(p["reward_reached"])}</td><td>{S(p["reward_at_optimum"])}</td>"
                )
                .Append($"<td>{S(p["twin"]?["predicted"])}</td><td>{S(p["twin"]?["measured"])}</td></tr>");
        sb.Append(
            "</table><p>Intervals: 95% Student-t over seeds (rewards: kept inside [0, 1]); per-seed values are in sweep.json.</p>"
        );
        sb.Append("<h2>Configuration</h2><pre>")
            .Append(E(sweep["config"]?.ToJsonString(new JsonSerializerOptions { WriteIndented = true })))
            .Append("</pre></body></html>");
        var path = Path.Combine(runDir, "sweep.html");
        AtomicFile.WriteAllText(path, sb.ToString());
        return path;
    }
}
