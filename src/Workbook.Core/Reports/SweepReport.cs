// sweep.html beside sweep.json (Experiments/Sweep.cs computes it), and the sweep as notebooks call it.
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Workbook.Charts;
using Workbook.Experiments;
using static Workbook.Reports.HtmlPage;

namespace Workbook.Reports;

public static class SweepReport
{
    const string Intro =
        "<p>SFT then RL with the KL in the reward (kl_mode = reward, scale_rewards = none), whose optimum is "
        + "p* ∝ p<sub>SFT</sub>·e<sup>r/β</sup>. Theorem 3.1 then predicts ΔL<sub>SFT</sub> = E<sub>x</sub> "
        + "log(1 + P(r=1|x)(e<sup>1/β</sup> − 1)) − "
        + "E<sub>p<sub>data</sub></sub> r/β nats per response, with P estimated from the SFT policy's own samples. "
        + "The twin runs SFT again after RL; the strict reward should return to the expert data's own reward.</p><ul>";

    /// <summary>sweep.html beside sweep.json: the charts, the computed statements and a table per point.</summary>
    public static string Write(string runDir, JsonObject sweep)
    {
        string S(JsonNode? st) =>
            st is null ? "–" : $"{St(st["mean"])} <span class=ci>[{St(st["ci95"]?[0])}, {St(st["ci95"]?[1])}]</span>";
        string St(JsonNode? n) =>
            n is null ? "n/a" : n.GetValue<double>().ToString("0.000", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.Append("<h1>Dose-response: predicted against measured SFT-loss rise</h1>").Append(Intro);
        foreach (var st in sweep["statements"]!.AsArray())
            sb.Append("<li>").Append(E(st!.GetValue<string>())).Append("</li>");
        sb.Append("</ul>").Append(CurveCharts.Html(SweepCharts.Rise(sweep)));
        if (sweep["points"]!.AsArray().Any(p => p!["twin"] is not null))
            sb.Append(CurveCharts.Html(SweepCharts.Twin(sweep)));
        sb.Append("<table><tr><th>β</th><th>loose fraction</th><th>predicted ΔL</th><th>measured ΔL</th><th>ratio</th>")
            .Append("<th>reward reached</th><th>reward at p*</th><th>twin: predicted</th><th>twin: measured</th></tr>");
        foreach (var p in sweep["points"]!.AsArray())
            sb.Append($"<tr><td>{p!["beta"]}</td><td>{p["loose_format_fraction"]}</td>")
                .Append($"<td>{S(p["predicted"])}</td><td>{S(p["measured"])}</td>")
                .Append(
                    $"<td>{S(p["ratio"])}</td><td>{S(p["reward_reached"])}</td><td>{S(p["reward_at_optimum"])}</td>"
                )
                .Append($"<td>{S(p["twin"]?["predicted"])}</td><td>{S(p["twin"]?["measured"])}</td></tr>");
        sb.Append("</table>");
        if (sweep["points"]!.AsArray().Any(p => p!["coin_null"] is not null))
        {
            // the null: the same budget from the same SFT policy with a fair coin as the reward (predicted rise 0)
            sb.Append("<h2>The coin-reward null</h2><p>RL from the same SFT policy, same β and budget, with a fair ")
                .Append("coin as the reward: its optimum is the reference policy, so the theorem predicts no rise ")
                .Append("and what it measures is the drift RL's own sampling noise causes. The rise net of it is ")
                .Append("paired by seed.</p>")
                .Append(CurveCharts.Html(SweepCharts.RiseNetOfNull(sweep)))
                .Append("<table><tr><th>β</th><th>loose fraction</th><th>predicted ΔL</th><th>coin null ΔL</th>")
                .Append("<th>null: rationale spans</th><th>measured − null</th><th>ratio net of null</th>")
                .Append("<th>KL reached: real</th><th>KL reached: null</th></tr>");
            foreach (var p in sweep["points"]!.AsArray().Where(p => p!["coin_null"] is not null))
                sb.Append($"<tr><td>{p!["beta"]}</td><td>{p["loose_format_fraction"]}</td>")
                    .Append($"<td>{S(p["predicted"])}</td><td>{S(p["coin_null"]!["measured"])}</td>")
                    .Append($"<td>{S(p["coin_null"]!["measured_rationale_spans"])}</td>")
                    .Append($"<td>{S(p["measured_minus_null"])}</td><td>{S(p["ratio_net_of_null"])}</td>")
                    .Append($"<td>{S(p["kl_reached"])}</td><td>{S(p["coin_null"]!["kl_reached"])}</td></tr>");
            sb.Append("</table>");
        }
        sb.Append("<p>Intervals: 95% Student-t over seeds (rewards: kept inside [0, 1]); ")
            .Append("per-seed values are in sweep.json.</p>")
            .Append(JsonSection("Configuration", sweep["config"]));
        return HtmlPage.Write(Path.Combine(runDir, "sweep.html"), "sweep", sb.ToString());
    }
}

public static class SweepBench
{
    /// <summary>The sweep as notebooks call it: the default grid (or the quick one: β 0.5, fractions 0.35 and 0), a
    /// new run folder under <paramref name="runsRoot"/>, sweep.json and sweep.html written. The same as
    /// `workbook sweep [--quick]`.</summary>
    public static JsonObject Run(bool quick, string runsRoot, Action<string>? log = null)
    {
        log ??= Console.WriteLine;
        var cfg = ExperimentConfig.Load(null, [], Sweep.Start);
        if (quick)
            cfg = cfg.Quick() with { Grpo = cfg.Quick().Grpo with { MaxSteps = 24 } };
        var grid = quick
            ? new SweepGrid([0.5], [0.35, 0])
            : new SweepGrid(SweepGrid.DefaultBetas, SweepGrid.DefaultFractions);
        var runDir = ExperimentRunner.NewRunDir(runsRoot, (quick ? "quick-" : "") + "sweep");
        var runner = new ExperimentRunner(cfg, runDir, runsRoot, log);
        Directory.CreateDirectory(runDir);
        AtomicFile.WriteAllText(Path.Combine(runDir, "config.json"), cfg.ToJson());
        var sweep = Sweep.Run(runner, grid, log);
        log($"sweep: {SweepReport.Write(runDir, sweep)}");
        return sweep;
    }
}
