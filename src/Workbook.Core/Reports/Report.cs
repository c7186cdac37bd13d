// report.html from a run folder's summary.json: the design and why it produces each effect, the predictions and
// whether they held, a results table, loss and reward curves per pipeline (seed bands, stage boundaries), config,
// versions. Self-contained (HtmlPage inlines plotly.js), so the file renders offline. Written atomically.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Charts;
using Workbook.Experiments;
using static Workbook.Reports.HtmlPage;

namespace Workbook.Reports;

public static class Report
{
    /// <summary>Runs the pipelines (summary.json written), then writes report.html. Returns the summary and the
    /// report's path.</summary>
    public static (JsonObject Summary, string Report) RunAndReport(
        this ExperimentRunner runner,
        IReadOnlyList<string> pipelines
    )
    {
        var summary = runner.RunAndSummarize(pipelines);
        return (summary, Write(runner.RunDir));
    }

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
        var path = Path.Combine(runDir, "report.html");
        AtomicFile.WriteAllText(path, Render(s, Path.GetFileName(runDir.TrimEnd('/'))));
        return path;
    }

    static string Cell(JsonNode? stat)
    {
        if (stat is null)
            return "<td>–</td>";
        string F(JsonNode? n) =>
            n is null ? "n/a" : n.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        var ci = stat["ci95"]!.AsArray();
        return $"<td>{F(stat["mean"])} <span class=ci>[{F(ci[0])}, {F(ci[1])}]</span></td>";
    }

    /// <summary>What each mixed method is and where it comes from, cited only when it ran.</summary>
    static readonly (string name, string what)[] MethodNotes =
    [
        (
            "sft-anchored",
            "GRPO plus λ·L<sub>SFT</sub> on expert data, the pretraining-mix (ptx) objective of InstructGPT "
                + "(Ouyang et al., arXiv 2203.02155) with expert data in place of pretraining data"
        ),
        (
            "chord",
            "GRPO plus an SFT term on expert data whose weight μ decays over the stage, after CHORD "
                + "(Zhang et al., arXiv 2508.11408)"
        ),
        (
            "luffy",
            "an expert response placed in each GRPO group (off-policy guidance), after LUFFY "
                + "(Yan et al., arXiv 2504.14945)"
        ),
        ("guarded", "GRPO stopped early by its stopping rule (grpo.stop_when)"),
    ];

    /// <summary>The report's first chart: the decoupling frontier, its computed sentence and a table with the paired
    /// differences against sft-then-rl.</summary>
    static void FrontierSection(StringBuilder sb, JsonObject s)
    {
        if (s["frontier"] is not JsonObject fr)
            return;
        sb.Append("<h2>The decoupling frontier</h2><p>")
            .Append(E(s["statements"]?["frontier"]?.GetValue<string>()))
            .Append("</p>")
            .Append(CurveCharts.Html(FrontierChart.Build(s)))
            .Append("<p>")
            .Append(E(fr["what"]?.GetValue<string>()))
            .Append(" ")
            .Append(E(fr["controls_note"]?.GetValue<string>()))
            .Append(" Differences are paired by seed (pipeline minus sft-then-rl; same base model per seed).</p>");
        sb.Append("<table><tr><th>pipeline</th><th>role</th><th>final SFT loss (nats/token)</th>")
            .Append("<th>final strict reward</th><th>on the front</th><th>Δ SFT loss vs sft-then-rl</th>")
            .Append("<th>Δ strict reward vs sft-then-rl</th></tr>");
        foreach (var (name, p) in fr["pipelines"]!.AsObject())
        {
            string role = p!["role"]!.GetValue<string>();
            string front =
                p["on_front"]!.GetValue<bool>() ? "yes"
                : role == "control" ? "not a candidate"
                : "no";
            sb.Append($"<tr><td>{E(name)}</td><td>{E(role)}</td>")
                .Append(Cell(p["final_sft_loss"]))
                .Append(Cell(p["final_reward"]))
                .Append($"<td>{front}</td>")
                .Append(Cell(p["vs_sft_then_rl"]?["final_sft_loss"]))
                .Append(Cell(p["vs_sft_then_rl"]?["final_reward"]))
                .Append("</tr>");
        }
        sb.Append("</table>");
        var present = MethodNotes.Where(m => fr["pipelines"]![m.name] is not null).ToList();
        if (present.Count > 0)
        {
            sb.Append(
                "<p>Methods in this run (each reuses sft-then-rl's SFT stage and changes only the RL stage):</p><ul>"
            );
            foreach (var (name, what) in present)
                sb.Append($"<li><b>{E(name)}</b>: {what}.</li>");
            sb.Append("</ul>");
        }
    }

    /// <summary>The stop rule against hindsight on the same runs (summary.json "stop_rule").</summary>
    static void StopRuleSection(StringBuilder sb, JsonObject s)
    {
        if (s["stop_rule"] is not JsonObject st)
            return;
        string F(JsonNode? n) =>
            n is null ? "undefined" : n.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        sb.Append("<h2>Stop rule against hindsight</h2><p>")
            .Append($"The {E(st["pipeline"]?.GetValue<string>())} pipeline's GRPO stage evaluates every ")
            .Append($"{st["check_steps"]} steps and stops when its rule fires; it then trains on to the full budget ")
            .Append("only to measure, on the same ")
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

    /// <summary>The paper's claim and Theorem 3.1's identity, above every report.</summary>
    const string Intro =
        "<p>Reproduction of <i>On the Non-decoupling of Supervised Fine-tuning and Reinforcement "
        + "Learning in Post-training</i> (arXiv 2601.07389): RL after SFT raises the SFT loss, and SFT "
        + "after RL lowers the reward RL reached. Theorem 3.1's identity: if RL reaches the KL-regularised "
        + "optimum p* ∝ p<sub>ref</sub>·e<sup>r/β</sup>, the SFT loss on expert data changes by "
        + "E<sub>x</sub> log E<sub>p<sub>ref</sub></sub> e<sup>r/β</sup> − E<sub>x</sub> "
        + "E<sub>p<sub>data</sub></sub> r/β nats per response, which is ≥ 0 when p<sub>ref</sub> = "
        + "p<sub>data</sub> and 0 when the reward is constant on what the expert writes. Each result below "
        + "has a prediction, a measurement of the same quantity, and controls under which the theorem "
        + "predicts no rise.</p>";

    public static string Render(JsonObject s, string title)
    {
        var sb = new StringBuilder();
        sb.Append("<h1>SFT and RL do not decouple: ").Append(E(title)).Append("</h1>");
        sb.Append(Intro);
        FrontierSection(sb, s);
        sb.Append("<h2>Predictions</h2><ul>");
        var held = s["prediction_held"]?.AsObject() ?? new JsonObject();
        foreach (var (name, st) in s["statements"]?.AsObject() ?? new JsonObject())
        {
            if (name == "frontier" && s["frontier"] is not null)
                continue; // stated with the frontier chart above
            var text = st?.GetValue<string>() ?? "";
            string? verdict = null;
            foreach (var prefix in new[] { "Held: ", "Not shown: ", "Not attributed: " })
                if (text.StartsWith(prefix))
                {
                    verdict = prefix[..^2].ToLowerInvariant();
                    text = char.ToUpperInvariant(text[prefix.Length]) + text[(prefix.Length + 1)..];
                }
            if (held[name] is null)
            {
                sb.Append($"<li><b>{E(name)}</b>: {E(text)}</li>");
                continue;
            }
            bool ok = held[name]!.GetValue<bool>();
            sb.Append($"<li><b>{E(name)}</b>: <span class={(ok ? "held" : "not")}>")
                .Append($"{verdict ?? (ok ? "held" : "not shown")}</span>. {E(text)}</li>");
        }
        sb.Append("</ul>");
        sb.Append("<h2>Design</h2><p>")
            .Append(E(s["design"]?.GetValue<string>()))
            .Append("</p><p>")
            .Append(E(s["seed_selection"]?.GetValue<string>()))
            .Append("</p>");

        var pipes = s["pipelines"]!.AsObject();
        sb.Append(
            "<h2>Results</h2><p>Mean over seeds with a 95% interval (Student-t; for rewards kept inside "
                + "their range). Changes are measured between the first and last evaluation of the "
                + "stage.</p><table><tr><th>quantity</th>"
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
                .Append($". P(r=1|x) from {pr["samples_per_prompt"]} samples of the SFT policy on each of ")
                .Append($"{pr["prompts"]} held-out prompts ")
                .Append("(the plug-in is biased low by Jensen; a two-level bootstrap measures that bias, which is ")
                .Append("removed, and gives the basic bootstrap interval); the expert term ")
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
                sb.Append($"<tr><td>{E(label)}</td>{Cell(pr[key])}")
                    .Append($"<td>{E(pr[key]?["per_seed"]?.ToJsonString())}</td></tr>");
            sb.Append("</table>");
        }
        if (s["controls"] is JsonObject controls)
        {
            sb.Append(
                    "<h2>Controls</h2><p>Same base models, seeds and budgets. Under each, the theorem "
                        + "predicts no SFT-loss rise: <b>lenient-reward</b> (RL with the lenient reward, which "
                        + "every expert response earns), <b>coin-reward</b> (RL with a fair coin as the reward: "
                        + "its optimum is the reference, so what moves is GRPO's own noise in the same budget), "
                        + "<b>no-format-mix</b> (SFT data with the strict line "
                        + "only), <b>fresh-optimizer</b> (SFT continued with a fresh AdamW for the RL budget). "
                        + "Paired differences are per seed.</p>"
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
                "<h2>Where the rise sits</h2><p>Change during RL of the held-out SFT loss, by expert-response "
                    + "form and span (nats per response of that form; the answer span includes "
                    + "&lt;|im_end|&gt;).</p><table><tr><th>form / span</th><th>Δ (nats/response)</th></tr>"
            );
            foreach (var (k, v) in split)
                sb.Append($"<tr><td>{E(k)}</td>{Cell(v)}</tr>");
            sb.Append("</table>");
        }
        if (s["comparisons"] is JsonObject comps)
        {
            sb.Append(
                "<h2>Paired comparisons</h2><table><tr><th>pair</th><th>Δ final SFT loss</th>"
                    + "<th>Δ final strict reward</th></tr>"
            );
            foreach (var (k, v) in comps)
                sb.Append($"<tr><td>{E(k)}</td>{Cell(v!["final_sft_loss"])}{Cell(v["final_reward"])}</tr>");
            sb.Append("</table>");
        }

        if (pipes.Any(p => p.Value?["final_classification"] is JsonObject))
        {
            // issue 12: what CoLA users compare (the label's accuracy and MCC at the end, strict and lenient parse)
            sb.Append(
                "<h2>Classification at the end</h2><p>The label of the policy's samples at the last evaluation: "
                    + "accuracy and Matthews correlation (MCC), strict parse (the reward's) and lenient "
                    + "(the last label)."
                    + "</p><table><tr><th>pipeline</th><th>accuracy (strict)</th><th>MCC (strict)</th>"
                    + "<th>accuracy (lenient)</th><th>MCC (lenient)</th></tr>"
            );
            foreach (var (name, v) in pipes)
                if (v?["final_classification"] is JsonObject c)
                    sb.Append($"<tr><td>{E(name)}</td>")
                        .Append(Cell(c["accuracy/strict"]))
                        .Append(Cell(c["mcc/strict"]))
                        .Append(Cell(c["accuracy/lenient"]))
                        .Append(Cell(c["mcc/lenient"]))
                        .Append("</tr>");
            sb.Append("</table>");
        }

        ForgettingSection(sb, s); // issue 14 §4
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
        sb.Append(JsonSection("Configuration", s["config"])).Append(JsonSection("Versions", s["versions"]));
        return HtmlPage.Render(title, sb.ToString());
    }

    /// <summary>Forgetting while it happens (issue 14, §4): the changes during RL, the computed correlation sentence
    /// and the charts against the SFT-loss rise (ForgettingSummary, ForgettingChart).</summary>
    static void ForgettingSection(StringBuilder sb, JsonObject s)
    {
        if (s["forgetting"] is not JsonObject f)
            return;
        var pipes = s["pipelines"]!.AsObject();
        sb.Append("<h2>Forgetting while it happens</h2><p>At every evaluation: the KL from the stage's start, ")
            .Append("KL(p<sub>start</sub> ‖ p<sub>current</sub>) on held-out prompts (exact over the vocabulary ")
            .Append("at each position of one completion per prompt sampled from p<sub>start</sub>; nats per ")
            .Append("response), the policy's entropy on its own samples, and with forgetting_task the held-out ")
            .Append("loss of the other embedded task. ")
            .Append("RL's Razor (arXiv 2509.04259) relates the first to forgetting.</p>");
        if (s["statements"]?["forgetting"] is JsonNode st)
            sb.Append("<p>").Append(E(st.GetValue<string>())).Append("</p>");
        sb.Append("<table><tr><th>change during RL</th>");
        var names = pipes
            .Where(p => p.Value!["kl_from_start_change_during_rl"] is not null)
            .Select(p => p.Key)
            .ToList();
        foreach (var name in names)
            sb.Append($"<th>{E(name)}</th>");
        sb.Append("</tr>");
        foreach (
            var (key, label) in new[]
            {
                ("sft_nll_per_response_change_during_rl", "Δ SFT loss (nats/response)"),
                ("kl_from_start_change_during_rl", "KL from start at the end (nats/response)"),
                ("kl_from_start_per_token_change_during_rl", "KL from start at the end (nats/token)"),
                ("entropy_change_during_rl", "Δ entropy (nats/token)"),
                ("other_task_sft_loss_change_during_rl", "Δ other task's SFT loss (nats/token)"),
            }
        )
        {
            if (!names.Any(n => pipes[n]![key] is not null))
                continue;
            sb.Append($"<tr><td>{E(label)}</td>");
            foreach (var name in names)
                sb.Append(Cell(pipes[name]![key]));
            sb.Append("</tr>");
        }
        sb.Append("</table><div class=charts>");
        foreach (var chart in ForgettingChart.Charts(s))
            sb.Append(CurveCharts.Html(chart));
        sb.Append("</div>");
    }
}
