// Runs the notebooks headless and renders them to HTML:
//  1. `dotnet tool restore` (dotnet-repl from the repository's tool manifest);
//  2. the kernel fix: dotnet-repl 0.3.259 ships FSharp.Core 10.0 while Plotly.NET 6 needs 10.1, so Plotly fails in the
//     kernel; the tool's copy is replaced by the (binary-compatible) one this build uses — idempotent, said when done.
//     dotnet-interactive 1.0.712001 (VS Code's Polyglot kernel) has the same clash: `notebooks fix-kernel` fixes it;
//  3. `dotnet repl --run notebooks/N.ipynb --exit-after-run` per notebook (exit code 2 = a cell failed; output cells
//     are checked for errors too), WORKBOOK_QUICK=1 in quick mode;
// 4. `jupyter-nbconvert --to html` of the executed notebook into reports/notebooks/N.html (charts are offline: the
// setup     cell inlines plotly.js).
using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Workbook.Notebooks;

public sealed record NotebookResult(
    string Name,
    bool Ok,
    string ExecutedPath,
    string? HtmlPath,
    TimeSpan Elapsed,
    string? Error
);

public sealed class NotebookRunner(string repoRoot, Action<string>? log = null)
{
    readonly Action<string> log = log ?? Console.WriteLine;
    public string NotebooksDir => Path.Combine(repoRoot, "notebooks");
    public string ReportsDir => Path.Combine(repoRoot, "reports", "notebooks");

    public IReadOnlyList<string> All() =>
        Directory.GetFiles(NotebooksDir, "*.ipynb").Select(Path.GetFileNameWithoutExtension).Order().ToList()!;

    static (int code, string output) Exec(
        string file,
        IEnumerable<string> args,
        string cwd,
        IDictionary<string, string>? env = null,
        int timeoutMs = 1_800_000
    )
    {
        var psi = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = cwd,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (env is not null)
            foreach (var (k, v) in env)
                psi.Environment[k] = v;
        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return (-1, $"{file} is not installed");
        }
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutMs))
        {
            p.Kill(true);
            return (-2, $"{file} timed out");
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    static string NugetRoot =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } n
            ? n
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>The FSharp.Core Plotly.NET was built against (the one in this build's output).</summary>
    static string OurFSharpCore =>
        Path.Combine(Path.GetDirectoryName(typeof(Plotly.NET.GenericChart).Assembly.Location)!, "FSharp.Core.dll");

    public void Prepare()
    {
        var (code, output) = Exec("dotnet", ["tool", "restore"], repoRoot);
        if (code != 0)
            throw new WorkbookException($"dotnet tool restore failed: {output.Trim()}");
        var toolDir = Path.Combine(NugetRoot, "dotnet-repl", "0.3.259", "tools", "net10.0", "any");
        if (!File.Exists(Path.Combine(toolDir, "FSharp.Core.dll")))
            throw new WorkbookException($"dotnet-repl 0.3.259 not found at {toolDir}");
        FixKernel(toolDir, log);
        if (Exec("jupyter-nbconvert", ["--version"], repoRoot).code != 0)
            throw new WorkbookException(
                "jupyter-nbconvert is not installed: apt-get install jupyter-nbconvert (tools/setup.sh does)"
            );
    }

    /// <summary>The notebook kernels installed on this machine: dotnet-repl and dotnet-interactive (the kernel of VS
    /// Code's Polyglot Notebooks and of the Jupyter .NET kernel) as local tools (NuGet cache) or global tools
    /// (~/.dotnet/tools).</summary>
    public static IReadOnlyList<string> KernelFolders()
    {
        var found = new List<string>();
        var globalStore = Path.Combine(
            Environment.GetFolderPath(Environment.SpecialFolder.UserProfile),
            ".dotnet",
            "tools",
            ".store"
        );
        foreach (var tool in new[] { "dotnet-repl", "microsoft.dotnet-interactive" })
        foreach (var root in new[] { Path.Combine(NugetRoot, tool), Path.Combine(globalStore, tool) })
            if (Directory.Exists(root))
                foreach (var f in Directory.EnumerateFiles(root, "FSharp.Core.dll", SearchOption.AllDirectories))
                    if (
                        System.Text.RegularExpressions.Regex.IsMatch(
                            f.Replace('\\', '/'),
                            "/tools/net[^/]+/any/FSharp.Core.dll$"
                        )
                    )
                        found.Add(Path.GetDirectoryName(f)!);
        return found.Distinct().Order().ToList();
    }

    /// <summary>Plotly.NET 6 needs FSharp.Core 10.1; dotnet-repl 0.3.259 and dotnet-interactive 1.0.712001 ship 10.0,
    /// so a chart cell fails with MissingMethodException. Replaces the kernel's FSharp.Core with ours when it is older
    /// (same assembly version, binary compatible); never downgrades; idempotent; says when it acts. Returns whether it
    /// replaced.</summary>
    public static bool FixKernel(string toolDir, Action<string> log)
    {
        var theirs = Path.Combine(toolDir, "FSharp.Core.dll");
        if (!File.Exists(theirs))
            throw new WorkbookException($"{toolDir}: no FSharp.Core.dll (not a .NET notebook kernel folder)");
        var ours = OurFSharpCore;
        var vOurs = Version.Parse(FileVersionInfo.GetVersionInfo(ours).FileVersion!);
        var vTheirs = Version.Parse(FileVersionInfo.GetVersionInfo(theirs).FileVersion!);
        if (vTheirs >= vOurs)
            return false;
        File.Copy(ours, theirs + ".tmp", true);
        File.Move(theirs + ".tmp", theirs, true);
        log($"notebook kernel: replaced FSharp.Core {vTheirs} with {vOurs} in {toolDir} (Plotly.NET 6 needs 10.1)");
        return true;
    }

    public NotebookResult Run(string name, bool quick)
    {
        var src = Path.Combine(NotebooksDir, name + ".ipynb");
        if (!File.Exists(src))
            throw new WorkbookException($"no notebook '{name}' (have: {string.Join(", ", All())})");
        Directory.CreateDirectory(ReportsDir);
        var executed = Path.Combine(ReportsDir, name + ".ipynb");
        var sw = Stopwatch.StartNew();
        var env = new Dictionary<string, string> { ["WORKBOOK_QUICK"] = quick ? "1" : "0" };
        var (code, output) = Exec(
            "dotnet",
            [
                "repl",
                "--run",
                src,
                "--exit-after-run",
                "--output-path",
                executed,
                "--output-format",
                "ipynb",
                "--working-dir",
                NotebooksDir,
                "--default-kernel",
                "csharp",
            ],
            NotebooksDir,
            env
        ); // #load and #r paths resolve from here
        string? error =
            code == 0 ? null : $"dotnet repl exited {code}{(code == 2 ? " (a cell failed)" : "")}: {output.Trim()}";
        if (File.Exists(executed))
        {
            var nb = JsonNode.Parse(File.ReadAllText(executed))!;
            var failed = nb["cells"]!
                .AsArray()
                .SelectMany(c => c!["outputs"]?.AsArray() ?? [])
                .Where(o => o!["output_type"]?.GetValue<string>() == "error")
                .ToList();
            if (failed.Count > 0)
                error ??= $"{failed.Count} cell(s) failed: {failed[0]!["evalue"]?.GetValue<string>()?.Split('\n')[0]}";
        }
        else
            error ??= "no executed notebook was written";
        string? html = null;
        if (File.Exists(executed))
        {
            // MathJax from Debian's libjs-mathjax when present (renders the LaTeX offline); nbconvert's default is a
            // CDN
            const string LocalMathJax = "/usr/share/javascript/mathjax/MathJax.js";
            List<string> args = ["--to", "html", executed, "--output", name + ".html", "--output-dir", ReportsDir];
            if (File.Exists(LocalMathJax))
                args.Add($"--HTMLExporter.mathjax_url=file://{LocalMathJax}?config=TeX-AMS_CHTML-full,Safe");
            var (c2, o2) = Exec("jupyter-nbconvert", args, repoRoot);
            if (c2 == 0)
                html = Path.Combine(ReportsDir, name + ".html");
            else
                error ??= $"jupyter-nbconvert failed: {o2.Trim()}";
        }
        return new NotebookResult(name, error is null, executed, html, sw.Elapsed, error);
    }
}
