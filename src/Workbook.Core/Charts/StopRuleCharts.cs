// The stop rule against hindsight (issue 14 §3), from summary.json's "stop_rule":
//  1. Φ(T) = ΔJ(T) − λ·ΔL_SFT(T) (or the budget's ΔJ within the budget) per seed over the steps the rule could stop at;
//  2. on each seed's curve, a marker where the rule stopped and one at the hindsight argmax, so the gap is visible;
//  3. dotted, the same Φ on fresh prompts the rule never saw (guarded.confirm_size), when the run has them.
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class StopRuleCharts
{
    /// <summary>A summary phi_curve's defined points (Φ is null outside a budget).</summary>
    static List<(double Step, double Phi)> Curve(JsonArray curve) =>
        curve
            .Where(p => p!["phi"] is not null)
            .Select(p => ((double)p!["step"]!.GetValue<long>(), p["phi"]!.GetValue<double>()))
            .ToList();

    public static GenericChart Phi(JsonObject stopRule)
    {
        var traces = new List<GenericChart>();
        var seeds = stopRule["per_seed"]!.AsArray();
        for (int i = 0; i < seeds.Count; i++)
        {
            var s = seeds[i]!;
            var color = Color.fromString(Palette.At(i));
            var pts = Curve(s["phi_curve"]!.AsArray());
            string seed = s["seed"]!.ToJsonString();
            // the same Φ on fresh prompts the rule never saw (guarded.confirm_size), dotted
            var fresh = stopRule["confirm"]
                ?["per_seed"]?.AsArray()
                .FirstOrDefault(c => c!["seed"]!.ToJsonString() == seed);
            var freshPts = Curve(fresh?["phi_curve"]?.AsArray() ?? []);
            if (freshPts.Count > 0)
                traces.Add(
                    Chart.Line<double, double, string>(
                        freshPts.Select(p => p.Step),
                        freshPts.Select(p => p.Phi),
                        Name: $"Φ(T) on fresh prompts, seed {seed}",
                        LineColor: color,
                        LineDash: StyleParam.DrawingStyle.Dot
                    )
                );
            traces.Add(
                Chart.Line<double, double, string>(
                    pts.Select(p => p.Step),
                    pts.Select(p => p.Phi),
                    Name: $"Φ(T), seed {seed}",
                    LineColor: color,
                    ShowMarkers: true
                )
            );
            foreach (
                var (key, label, symbol) in new[]
                {
                    ("predicted_step", "stopped by the rule", StyleParam.MarkerSymbol.Diamond),
                    ("hindsight_step", "hindsight argmax", StyleParam.MarkerSymbol.Star),
                }
            )
            {
                long at = s[key]!.GetValue<long>();
                var hit = pts.Where(p => p.Step == at).ToList();
                if (hit.Count == 0)
                    continue;
                traces.Add(
                    Chart.Point<double, double, string>(
                        [hit[0].Step],
                        [hit[0].Phi],
                        Name: $"seed {seed}: {label} (step {at})",
                        MarkerColor: color,
                        MarkerSymbol: symbol
                    )
                );
            }
        }
        var chart = Chart
            .Combine(traces)
            .WithXAxisStyle<double, double, string>(TitleText: "GRPO step T (within the RL stage)")
            .WithYAxisStyle<double, double, string>(TitleText: "Φ(T)")
            .WithSize(760, 400);
        return Plotly.NET.Chart.withTitle($"Stop rule '{stopRule["rule"]}': Φ(T) per seed", null).Invoke(chart);
    }
}
