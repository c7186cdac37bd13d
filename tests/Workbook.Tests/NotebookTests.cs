using Workbook.Notebooks;

namespace Workbook.Tests;

/// <summary>Executes a notebook headless with dotnet repl (from the repository's tool manifest), renders it with
/// jupyter-nbconvert and checks in headless Chromium that its chart was drawn offline. Needs the Release build of the
/// CLI (the notebooks load the core from it; tools/test.sh builds it first).</summary>
public class NotebookTests
{
    [Fact]
    public void The_theorems_notebook_runs_headless_and_its_chart_renders_offline()
    {
        var cliBuild = Path.Combine(
            TestData.RepoRoot,
            "src",
            "Workbook.Cli",
            "bin",
            "Release",
            "net10.0",
            "Workbook.Core.dll"
        );
        Assert.True(
            File.Exists(cliBuild),
            $"{cliBuild} missing: build the CLI in Release first (bash tools/test.sh does)"
        );
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

/// <summary>VS Code's Polyglot Notebooks runs dotnet-interactive and talks to it over stdio (JSON kernel commands).
/// This drives the same kernel, from the tool manifest, the way the extension does: the shared setup cell, then a chart
/// cell.</summary>
public class PolyglotKernelTests
{
    [Fact]
    public void The_polyglot_kernel_renders_a_chart_after_fix_kernel()
    {
        var restoreInfo = new System.Diagnostics.ProcessStartInfo("dotnet", ["tool", "restore"])
        {
            WorkingDirectory = TestData.RepoRoot,
        };
        using (var restore = System.Diagnostics.Process.Start(restoreInfo)!)
        {
            restore.WaitForExit();
            Assert.Equal(0, restore.ExitCode);
        }
        var dir = NotebookRunner.KernelFolders().FirstOrDefault(d => d.Contains("microsoft.dotnet-interactive"));
        Assert.True(dir is not null, "dotnet-interactive is not in the NuGet cache after dotnet tool restore");
        // the fix applies to a private kernel folder, so the machine's NuGet cache stays as it was
        var cached = File.ReadAllBytes(Path.Combine(dir!, "FSharp.Core.dll"));
        var kernel = PrivateKernel(dir!);
        NotebookRunner.FixKernel(kernel, _ => { });
        Assert.False(NotebookRunner.FixKernel(kernel, _ => { })); // idempotent
        Assert.Equal(cached, File.ReadAllBytes(Path.Combine(dir!, "FSharp.Core.dll")));

        // under coreutils' timeout: a kernel whose test host died spins on its closed stdin (seen at 60% of a core for
        // an hour), and nothing kills it then; 15 minutes covers the two cells' 5-minute deadlines
        var psi = new System.Diagnostics.ProcessStartInfo(
            "timeout",
            [
                "--kill-after=10",
                "900",
                "dotnet",
                Path.Combine(kernel, "Microsoft.DotNet.Interactive.App.dll"),
                "stdio",
                "--default-kernel",
                "csharp",
            ]
        )
        {
            WorkingDirectory = Path.Combine(TestData.RepoRoot, "notebooks"),
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var lines = new System.Collections.Concurrent.BlockingCollection<string>();
        _ = Task.Run(() =>
        {
            string? l;
            while ((l = p.StandardOutput.ReadLine()) is not null)
                lines.Add(l);
            lines.CompleteAdding();
        });
        _ = p.StandardError.ReadToEndAsync();
        try
        {
            List<System.Text.Json.Nodes.JsonNode> Submit(string token, string code)
            {
                var env = new System.Text.Json.Nodes.JsonObject
                {
                    ["token"] = token,
                    ["commandType"] = "SubmitCode",
                    ["command"] = new System.Text.Json.Nodes.JsonObject
                    {
                        ["code"] = code,
                        ["targetKernelName"] = "csharp",
                    },
                };
                p.StandardInput.WriteLine(env.ToJsonString());
                p.StandardInput.Flush();
                var events = new List<System.Text.Json.Nodes.JsonNode>();
                var deadline = DateTime.UtcNow.AddMinutes(5);
                while (
                    DateTime.UtcNow < deadline
                    && lines.TryTake(out var line, TimeSpan.FromSeconds(5)) | !lines.IsCompleted
                )
                {
                    if (line is null || !line.Contains(token))
                        continue;
                    var e = System.Text.Json.Nodes.JsonNode.Parse(line)!;
                    events.Add(e);
                    var type = e["eventType"]?.GetValue<string>();
                    if (type is "CommandFailed")
                        Assert.Fail($"cell {token} failed: {e["event"]?["message"]}");
                    if (type is "CommandSucceeded")
                        return events;
                }
                Assert.Fail($"cell {token}: no answer from the kernel");
                return events;
            }
            Submit("setup", "#load \"setup.csx\"");
            var chart = Submit(
                "chart",
                "using Workbook.Charts; using Workbook.Theory;\nvar t = new SoftmaxLinear(n: 6, k: 3, d: 4, beta: 0.5, "
                    + "seed: 1);\nTheoryCharts.Landscape(t, Landscape.RlFromSftOptimum(t, steps: 5, lambda: 1.0)).sft"
            );
            var html = chart
                .Where(e => e["eventType"]?.GetValue<string>() == "ReturnValueProduced")
                .SelectMany(e => e["event"]!["formattedValues"]!.AsArray())
                .Where(f => f!["mimeType"]!.GetValue<string>() == "text/html")
                .Select(f => f!["value"]!.GetValue<string>())
                .FirstOrDefault();
            Assert.NotNull(html);
            Assert.Contains("Plotly.newPlot", html);
        }
        finally
        {
            try
            {
                p.Kill(true);
            }
            catch (InvalidOperationException) { }
        }
    }

    /// <summary>A kernel folder of our own: the app's entry files and FSharp.Core copied (the host resolves the app's
    /// folder from the entry assembly's real path), everything else linked to the tool's files.</summary>
    static string PrivateKernel(string toolDir)
    {
        var kernel = TestData.TempDir();
        foreach (var entry in Directory.EnumerateFileSystemEntries(toolDir))
        {
            var name = Path.GetFileName(entry);
            var dest = Path.Combine(kernel, name);
            if (Directory.Exists(entry))
                Directory.CreateSymbolicLink(dest, entry);
            else if (name == "FSharp.Core.dll" || name.StartsWith("Microsoft.DotNet.Interactive.App."))
                File.Copy(entry, dest);
            else
                File.CreateSymbolicLink(dest, entry);
        }
        return kernel;
    }
}
