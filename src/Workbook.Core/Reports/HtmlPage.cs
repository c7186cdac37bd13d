// The one page shell of every HTML report (report.html, sweep.html, coupling-report.html, landscape.html): a shared
// stylesheet and plotly.js inlined in the head, so each page is self-contained and renders offline.
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Charts;

namespace Workbook.Reports;

public static class HtmlPage
{
    /// <summary>The shared stylesheet: tables of numbers right-aligned with the label column left, CIs greyed,
    /// verdicts coloured, charts side by side.</summary>
    public const string Css =
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        + "table{border-collapse:collapse;margin:1em 0}"
        + "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
        + "td:first-child{text-align:left}.ci{color:#777;font-size:90%}"
        + ".held{color:#176a17;font-weight:600}.not{color:#a33;font-weight:600}"
        + "pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:85%}code{font-size:90%}"
        + ".charts{display:flex;flex-wrap:wrap;gap:8px}";

    /// <summary>Text as HTML (null as empty).</summary>
    public static string E(string? text) => WebUtility.HtmlEncode(text ?? "");

    /// <summary>A whole page: <paramref name="body"/> is HTML; <paramref name="extraCss"/> adds rules after the
    /// shared ones.</summary>
    public static string Render(string title, string body, string extraCss = "") =>
        new StringBuilder("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>")
            .Append(E(title))
            .Append("</title><style>")
            .Append(Css)
            .Append(extraCss)
            .Append("</style>")
            .Append(CurveCharts.PlotlyScriptTag())
            .Append("</head><body>")
            .Append(body)
            .Append("</body></html>")
            .ToString();

    /// <summary>Renders the page and writes it atomically to <paramref name="path"/>; returns the path.</summary>
    public static string Write(string path, string title, string body, string extraCss = "")
    {
        AtomicFile.WriteAllText(path, Render(title, body, extraCss));
        return path;
    }

    /// <summary>An &lt;h2&gt; section: the heading (text) and its HTML.</summary>
    public static string Section(string heading, string html) => $"<h2>{E(heading)}</h2>{html}";

    /// <summary>A section showing JSON (a config, versions) indented in a &lt;pre&gt;.</summary>
    public static string JsonSection(string heading, JsonNode? json) =>
        Section(heading, $"<pre>{E(json?.ToJsonString(Indented))}</pre>");

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };
}
