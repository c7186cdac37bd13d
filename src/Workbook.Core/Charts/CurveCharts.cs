// Plotly.NET charts of the experiment curves: per pipeline, the held-out SFT loss and the rewards over optimizer steps.
//  1. One thin line per seed, named by its real seed number (the hover label says which run it is).
//  2. The seed mean, and a band that is the 95% CI of that mean over the seeds (Experiments/Statistics.cs): Student-t,
//     and for a metric with a range (rewards in [0, 1]) the bounded interval, which never leaves the range. The band's
//     legend entry says so; it is not a min-max band.
//  3. Stage boundaries as dashed vertical lines, each stage labelled with its name from the summary's "stages".
// HTML output embeds plotly.js (from Plotly.NET's own resources), so reports render offline.
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Plotly.NET.LayoutObjects;
using Workbook.Experiments;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class CurveCharts
{
    /// <summary>The band's legend name: what the band is.</summary>
    public static string BandName(string label, int seeds) => $"{label}: 95% CI of the mean over {seeds} seeds";

    /// <summary>The 95% CI of the seed mean at one step: Student-t; inside <paramref name="range"/> when given (the
    /// bounded interval when both ends are finite, else the t interval clipped to the finite end). NaN under 2
    /// seeds.</summary>
    public static (double lo, double hi) Band(IReadOnlyList<double> values, (double lo, double hi)? range = null)
    {
        if (range is { } r && double.IsFinite(r.lo) && double.IsFinite(r.hi))
        {
            var b = Stat.Bounded(values, r.lo, r.hi);
            return (b.Ci95[0], b.Ci95[1]);
        }
        var s = Stat.Of(values);
        double lo = s.Ci95[0],
            hi = s.Ci95[1];
        if (range is { } q)
        {
            lo = Math.Max(lo, q.lo);
            hi = Math.Min(hi, q.hi);
        }
        return (lo, hi);
    }

    /// <summary>A curve over steps for several seeds: the mean, the 95% CI band of the mean and the individual seeds.
    /// <paramref name="seedIds"/> names the seeds (the same order as each series' seed list);
    /// <paramref name="range"/> is the metric's range; <paramref name="stages"/> labels each stage at its first step
    /// and draws the boundaries.</summary>
    public static GenericChart Curves(
        string title,
        string yTitle,
        IReadOnlyList<(string label, IReadOnlyList<(double step, double value)[]> seeds)> series,
        IReadOnlyList<double>? boundaries = null,
        bool logY = false,
        IReadOnlyList<long>? seedIds = null,
        (double lo, double hi)? range = null,
        IReadOnlyList<(double start, string name)>? stages = null
    )
    {
        var traces = new List<GenericChart>();
        for (int s = 0; s < series.Count; s++)
        {
            var (label, seeds) = series[s];
            if (seedIds is not null && seedIds.Count != seeds.Count)
                throw new ArgumentException(
                    $"CurveCharts.Curves: {seedIds.Count} seed ids for {seeds.Count} seed curves of '{label}'"
                );
            var hex = Palette.At(s);
            var color = Color.fromString(hex);
            var fill = Color.fromString(
                $"rgba({Convert.ToInt32(hex[1..3], 16)},{Convert.ToInt32(hex[3..5], 16)},"
                    + $"{Convert.ToInt32(hex[5..7], 16)},0.18)"
            );
            var steps = seeds.SelectMany(x => x.Select(p => p.step)).Distinct().Order().ToArray();
            var bySeed = seeds
                .Select(x => x.GroupBy(p => p.step).ToDictionary(g => g.Key, g => g.Last().value))
                .ToList();
            var at = steps.Select(st => bySeed.Where(d => d.ContainsKey(st)).Select(d => d[st]).ToArray()).ToArray();
            var mean = at.Select(v => v.Average()).ToArray();
            var band = at.Select(v => Band(v, range)).ToArray();
            // the band only where it is defined (2+ seeds at that step)
            var ok = Enumerable
                .Range(0, steps.Length)
                .Where(i => double.IsFinite(band[i].lo) && double.IsFinite(band[i].hi))
                .ToArray();
            var bandName = BandName(label, seeds.Count);
            if (ok.Length > 0)
            {
                traces.Add(
                    Chart.Line<double, double, string>(
                        ok.Select(i => steps[i]),
                        ok.Select(i => band[i].lo),
                        Name: bandName + " (lower)",
                        ShowLegend: false,
                        LineColor: fill,
                        LineWidth: 0.0
                    )
                );
                traces.Add(
                    Chart.Line<double, double, string>(
                        ok.Select(i => steps[i]),
                        ok.Select(i => band[i].hi),
                        Name: bandName,
                        ShowLegend: true,
                        LineColor: fill,
                        LineWidth: 0.0,
                        Fill: StyleParam.Fill.ToNext_y,
                        FillColor: fill
                    )
                );
            }
            for (int k = 0; k < seeds.Count; k++)
                traces.Add(
                    Chart.Line<double, double, string>(
                        seeds[k].Select(p => p.step),
                        seeds[k].Select(p => p.value),
                        Name: $"{label}, seed {(seedIds is null ? $"#{k + 1}" : seedIds[k].ToString())}",
                        ShowLegend: false,
                        LineColor: color,
                        LineWidth: 0.8,
                        Opacity: 0.45
                    )
                );
            traces.Add(
                Chart.Line<double, double, string>(
                    steps,
                    mean,
                    Name: $"{label}: mean over {seeds.Count} seeds",
                    LineColor: color,
                    LineWidth: 2.5,
                    ShowMarkers: true
                )
            );
        }
        var chart = Chart
            .Combine(traces)
            .WithXAxisStyle<double, double, string>(TitleText: "optimizer step")
            .WithYAxisStyle<double, double, string>(
                TitleText: yTitle,
                AxisType: logY ? StyleParam.AxisType.Log : StyleParam.AxisType.Linear
            )
            .WithSize(760, 400);
        var lines = (boundaries ?? []).Concat(stages?.Skip(1).Select(x => x.start) ?? []).Distinct().ToList();
        if (lines.Count > 0)
            chart = Plotly.NET.Chart.withShapes(lines.Select(VerticalLine), null).Invoke(chart);
        if (stages is { Count: > 0 })
        {
            var labels = stages.Select(x => StageLabel(x.start, x.name));
            chart = Plotly.NET.Chart.withAnnotations(labels, null).Invoke(chart);
        }
        return Plotly.NET.Chart.withTitle(title, null).Invoke(chart);
    }

    // Plotly.NET's F# init functions take generic options C# cannot infer; its layout objects are dynamic objects whose
    // properties are plotly.js's own names, so set those.
    static Shape VerticalLine(double x)
    {
        var s = new Shape();
        s.SetProperty("type", "line");
        s.SetProperty("xref", "x");
        s.SetProperty("yref", "paper");
        s.SetProperty("x0", x);
        s.SetProperty("x1", x);
        s.SetProperty("y0", 0.0);
        s.SetProperty("y1", 1.0);
        var line = new DynamicObj.DynamicObj();
        line.SetProperty("color", "#888888");
        line.SetProperty("width", 1.0);
        line.SetProperty("dash", "dash");
        s.SetProperty("line", line);
        return s;
    }

    static Annotation StageLabel(double x, string name)
    {
        var a = new Annotation();
        a.SetProperty("x", x);
        a.SetProperty("xref", "x");
        a.SetProperty("xanchor", "left");
        a.SetProperty("y", 1.0);
        a.SetProperty("yref", "paper");
        a.SetProperty("yanchor", "bottom");
        a.SetProperty("text", name);
        a.SetProperty("showarrow", false);
        var font = new DynamicObj.DynamicObj();
        font.SetProperty("size", 11);
        font.SetProperty("color", "#555555");
        a.SetProperty("font", font);
        return a;
    }

    /// <summary>The loss and reward charts of one pipeline from summary.json: seeds named from the curves' "seed",
    /// stages labelled from "stages", reward bands inside [0, 1] and loss bands above 0.</summary>
    public static (GenericChart loss, GenericChart reward) Pipeline(JsonObject summary, string pipeline)
    {
        var p = summary["pipelines"]![pipeline]!.AsObject();
        var keys = summary["metric_keys"]!.AsObject();
        string lossKey = keys["sft_loss"]!.GetValue<string>(),
            strict = keys["reward"]!.GetValue<string>();
        string lenient = keys["lenient_reward"]!.GetValue<string>();
        var curves = p["curves"]!.AsArray();
        var seedIds = curves.Select(c => (long)Num(c!["seed"]!)).ToList();
        IReadOnlyList<(double, double)[]> Seeds(string key) =>
            curves
                .Select(c =>
                    c!["points"]!
                        .AsArray()
                        .Where(pt => pt!["metrics"]![key] is not null)
                        .Select(pt => (Num(pt!["step"]!), Num(pt!["metrics"]![key]!)))
                        .ToArray()
                )
                .ToList();
        var stages = p["stages"]!
            .AsArray()
            .Select(s => (Num((s!["Start"] ?? s["start"])!), (s["Name"] ?? s["name"])!.GetValue<string>()))
            .ToList();
        var loss = Curves(
            $"{pipeline}: SFT loss on held-out expert data",
            "cross-entropy (nats/token, log scale)",
            [("eval SFT loss", Seeds(lossKey))],
            logY: true,
            seedIds: seedIds,
            range: (0, double.PositiveInfinity),
            stages: stages
        );
        var reward = Curves(
            $"{pipeline}: reward on held-out prompts",
            "mean reward",
            [("strict format", Seeds(strict)), ("lenient (last label)", Seeds(lenient))],
            seedIds: seedIds,
            range: (0, 1),
            stages: stages
        );
        return (loss, reward);
    }

    /// <summary>A JSON number as double, whether the node was parsed from text or built in memory from a
    /// long.</summary>
    static double Num(JsonNode n) =>
        n.AsValue().TryGetValue<double>(out var d) ? d
        : n.AsValue().TryGetValue<long>(out var l) ? l
        : double.Parse(n.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);

    public static string PlotlyJs()
    {
        using var s =
            typeof(GenericChart).Assembly.GetManifestResourceStream("Plotly.NET.plotly-2.28.0.min.js")
            ?? throw new InvalidOperationException("plotly.js resource not found in Plotly.NET");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>A script tag defining window.Plotly offline (AMD 'define' hidden so it also works beside
    /// require.js).</summary>
    public static string PlotlyScriptTag() =>
        "<script type=\"text/javascript\">(function(){var d=window.define;window.define=undefined;\n"
        + PlotlyJs()
        + "\nwindow.define=d;})();</script>";

    public static string Html(GenericChart chart)
    {
        _ = LoopCheckByReference;
        return GenericChart.toChartHTML(chart);
    }

    /// <summary>True once Plotly.NET's JSON settings find reference loops by reference (set on first use).
    /// Plotly.NET serializes a chart with Newtonsoft.Json, whose loop check compares each object with every object
    /// above it by Equals, and a DynamicObj's Equals hashes the object's whole subtree: two thirds of a main job's
    /// report time went there. Plotly.NET's settings say ReferenceLoopHandling.Serialize, under which Newtonsoft
    /// uses the check's answer only for its trace log, so the JSON is the same whatever the comparer (tested). The
    /// settings are internal to Plotly.NET (Globals.JSON_CONFIG): if a version moves them this is false, and charts
    /// render as before, only slower.</summary>
    public static bool LoopCheckByReference => LoopCheck.Value;

    static readonly Lazy<bool> LoopCheck = new(() =>
    {
        const System.Reflection.BindingFlags Any =
            System.Reflection.BindingFlags.Static
            | System.Reflection.BindingFlags.NonPublic
            | System.Reflection.BindingFlags.Public;
        var settings =
            typeof(GenericChart).Assembly.GetType("Globals")?.GetProperty("JSON_CONFIG", Any)?.GetValue(null)
            as Newtonsoft.Json.JsonSerializerSettings;
        if (settings is null)
            return false;
        settings.EqualityComparer = ReferenceEqualityComparer.Instance;
        return true;
    });
}
