using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Workbook.Reports;

namespace Workbook.Tests;

/// <summary>Issue 10: every HTML page is one shell (HtmlPage): one head with the shared stylesheet and plotly.js
/// inlined, the title escaped, the body as given.</summary>
public class ReportPageTests
{
    [Fact]
    public void A_page_is_self_contained_with_the_shared_style_and_an_escaped_title()
    {
        var html = HtmlPage.Render("a <b> & c", "<p>body</p>", "td{color:red}");
        Assert.StartsWith(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>a &lt;b&gt; &amp; c</title>",
            html
        );
        Assert.Contains($"<style>{HtmlPage.Css}td{{color:red}}</style>", html);
        Assert.Contains("Plotly.newPlot", html); // plotly.js itself, inline
        Assert.DoesNotMatch("<script[^>]+src=", html);
        Assert.EndsWith("</head><body><p>body</p></body></html>", html);
        Assert.Equal("", HtmlPage.E(null));
        Assert.Equal(
            "<h2>x &amp; y</h2><pre>{\n  &quot;k&quot;: 1\n}</pre>".Replace("\n", Environment.NewLine),
            HtmlPage.JsonSection("x & y", new JsonObject { ["k"] = 1 })
        );
    }

    [Fact]
    public void The_run_report_is_rendered_in_the_shared_shell()
    {
        var html = Report.Render(new JsonObject { ["pipelines"] = new JsonObject() }, "run");
        Assert.StartsWith("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>run</title>", html);
        Assert.Contains($"<style>{HtmlPage.Css}</style>", html);
        Assert.Contains("<h1>SFT and RL do not decouple: run</h1><p>Reproduction of", html);
        Assert.EndsWith("</pre></body></html>", html);
    }

    [Fact]
    public void The_TRL_report_is_written_in_the_shared_shell()
    {
        var fixtures = Path.Combine(TestData.RepoRoot, "tests", "Workbook.Tests", "Fixtures", "trl-runs");
        var path = TrlReport.Write(fixtures, Path.Combine(TestData.TempDir(), "coupling.html"));
        var html = File.ReadAllText(path);
        Assert.Single(Regex.Matches(html, "<!DOCTYPE html>"));
        Assert.StartsWith(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>TRL coupling report</title>"
                + $"<style>{HtmlPage.Css}td:nth-child(2){{text-align:left}}</style><script",
            html
        );
        Assert.Contains("<h2>Statements</h2>", html);
    }
}
