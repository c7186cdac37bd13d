// The coupling report of TRL runs (`workbook report --from-trl DIR`): coupling-report.html from what
// Experiments/TrlImport.cs reads and computes.
using System.Text;
using Workbook.Charts;
using Workbook.Experiments;
using static Workbook.Experiments.TrlImport;
using static Workbook.Reports.HtmlPage;

namespace Workbook.Reports;

public static class TrlReport
{
    /// <summary>Renders DIR's runs into an HTML report (default DIR/coupling-report.html); returns its path.</summary>
    public static string Write(string dir, string? outPath = null)
    {
        var pipelines = TrlImport.Load(dir);
        var findings = TrlImport.Findings(pipelines);
        var sb = new StringBuilder();
        sb.Append("<h1>SFT and RL do not decouple: TRL runs in ").Append(E(dir)).Append("</h1>");
        sb.Append("<p>From TRL's <code>trainer_state.json</code> files (<code>log_history</code>). ")
            .Append("The paper (arXiv 2601.07389) predicts that GRPO after SFT raises the SFT loss on expert data, ")
            .Append("and that SFT after GRPO lowers the reward GRPO reached.</p>");
        sb.Append("<h2>Statements</h2><ul>");
        foreach (var f in findings.Where(f => f.Statement.Length > 0))
            sb.Append("<li>").Append(E(f.Statement)).Append("</li>");
        sb.Append("</ul><h2>Changes</h2><table><tr><th>pipeline</th><th>quantity</th><th>mean</th><th>95% CI</th>")
            .Append("<th>per seed</th></tr>");
        foreach (var (p, q, s, _) in findings)
        {
            var ci = double.IsFinite(s.Ci95[0]) ? s.Interval(F) : "–";
            sb.Append($"<tr><td>{E(p)}</td><td>{E(q)}</td><td>{F(s.Mean)}</td><td>{ci}</td>")
                .Append($"<td>{E(string.Join(", ", s.PerSeed.Select(F)))}</td></tr>");
        }
        sb.Append("</table><p>A change is the stage's last evaluation minus its first ")
            .Append("(its step-0 evaluation, else the previous stage's last).</p>");
        sb.Append("<h2>Curves</h2>");
        foreach (var p in pipelines)
        {
            var bounds = new List<double>();
            double off = 0;
            foreach (var st in p.Seeds[0].Stages.SkipLast(1))
            {
                off += st.Steps;
                bounds.Add(off);
            }
            var stages = string.Join(" → ", p.Seeds[0].Stages.Select(s => $"{s.Name} ({s.Kind}, {s.Steps:0} steps)"));
            sb.Append($"<h3>{E(p.Name)}</h3><p>Stages: {E(stages)}; {p.Seeds.Count} seed(s).</p><div class=charts>");
            if (Series(p, SftLoss).Any(x => x.Length > 0))
                sb.Append(
                    CurveCharts.Html(
                        CurveCharts.Curves(
                            $"{p.Name}: SFT loss on held-out expert data",
                            "cross-entropy (nats/token, log scale)",
                            [("eval SFT loss", Series(p, SftLoss))],
                            bounds,
                            logY: true
                        )
                    )
                );
            var rewards = new List<(string, IReadOnlyList<(double, double)[]>)>();
            if (Series(p, Strict).Any(x => x.Length > 0))
                rewards.Add(("strict format", Series(p, Strict)));
            if (Series(p, Lenient).Any(x => x.Length > 0))
                rewards.Add(("lenient (last label)", Series(p, Lenient)));
            if (rewards.Count > 0)
                sb.Append(
                    CurveCharts.Html(
                        CurveCharts.Curves($"{p.Name}: reward on held-out prompts", "mean reward", rewards, bounds)
                    )
                );
            if (Series(p, TrainReward).Any(x => x.Length > 0))
                sb.Append(
                    CurveCharts.Html(
                        CurveCharts.Curves(
                            $"{p.Name}: GRPO training reward (TRL's reward)",
                            "mean reward",
                            [("reward", Series(p, TrainReward))],
                            bounds
                        )
                    )
                );
            sb.Append("</div>");
        }
        sb.Append("<h2>Sources</h2><ul>");
        foreach (var p in pipelines)
        foreach (var s in p.Seeds)
        foreach (var st in s.Stages)
            sb.Append($"<li>{E(p.Name)} / {E(s.Name)} / {E(st.Name)} ({st.Kind}): <code>{E(st.Source)}</code></li>");
        sb.Append("</ul>");
        var path = outPath ?? Path.Combine(dir, "coupling-report.html");
        // the second column names the quantity, so it is text too
        return HtmlPage.Write(path, "TRL coupling report", sb.ToString(), "td:nth-child(2){text-align:left}");
    }
}
