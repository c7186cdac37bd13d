using Workbook.Notebooks;

namespace Workbook.Tests;

/// <summary>Executes a notebook headless with dotnet repl (from the repository's tool manifest), renders it with
/// jupyter-nbconvert and checks in headless Chromium that its chart was drawn offline. Needs the Release build of the CLI
/// (the notebooks load the core from it; tools/test.sh builds it first).</summary>
public class NotebookTests
{
    [Fact]
    public void The_theorems_notebook_runs_headless_and_its_chart_renders_offline()
    {
        var cliBuild = Path.Combine(TestData.RepoRoot, "src", "Workbook.Cli", "bin", "Release", "net10.0", "Workbook.Core.dll");
        Assert.True(File.Exists(cliBuild), $"{cliBuild} missing: build the CLI in Release first (bash tools/test.sh does)");
        var runner = new NotebookRunner(TestData.RepoRoot, _ => { });
        runner.Prepare();
        var r = runner.Run("01-theorems", quick: true);
        Assert.True(r.Ok, r.Error);
        Assert.NotNull(r.HtmlPath);
        var html = File.ReadAllText(r.HtmlPath!);
        Assert.DoesNotMatch("<script[^>]+src=\"https?://[^\"]*plot", html);
        ChromiumRender.AssertChartsRender(r.HtmlPath!, minCharts: 1);
    }
}
