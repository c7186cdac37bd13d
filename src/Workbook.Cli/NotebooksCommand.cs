using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Notebooks;

namespace Workbook.Cli;

public sealed class NotebooksCommand : Command<NotebooksCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<ACTION>")]
        [Description("run, or fix-kernel (fix FSharp.Core in the installed .NET notebook kernels)")]
        public string Action { get; init; } = "";

        [CommandArgument(1, "[NAMES]")]
        [Description("run: notebook names (default: all), e.g. 01-theorems; fix-kernel: extra kernel tool folders")]
        public string[] Names { get; init; } = [];

        [CommandOption("--quick")]
        [Description("Small budgets (WORKBOOK_QUICK=1)")]
        public bool Quick { get; init; }

        [CommandOption("--runs <DIR>")]
        [Description("Folder of the run folders the notebooks write (WORKBOOK_RUNS; default: runs/ in the checkout)")]
        public string? Runs { get; init; }

        public override ValidationResult Validate() =>
            Action is not ("run" or "fix-kernel")
                ? ValidationResult.Error($"unknown action '{Action}': expected run or fix-kernel")
            : Action is "fix-kernel" && (Quick || Runs is not null)
                ? ValidationResult.Error($"{(Quick ? "--quick" : "--runs")}: goes with run, not fix-kernel")
            : ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings s)
    {
        if (s.Action == "fix-kernel")
            return FixKernels(s.Names);
        var root = FindRoot();
        if (s.Runs is not null) // the kernels inherit it; Workbench.RunsRoot reads it
            Environment.SetEnvironmentVariable("WORKBOOK_RUNS", Path.GetFullPath(s.Runs));
        var runner = new NotebookRunner(root, m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]"));
        runner.Prepare();
        var names = s.Names.Length > 0 ? s.Names : runner.All().ToArray();
        int failed = 0;
        foreach (var n in names)
        {
            AnsiConsole.MarkupLineInterpolated($"[bold]{n}[/] ...");
            var r = runner.Run(n, s.Quick);
            if (r.Ok)
                AnsiConsole.MarkupLineInterpolated($"  ok in {r.Elapsed:mm\\:ss}: {r.HtmlPath}");
            else
            {
                failed++;
                AnsiConsole.MarkupLineInterpolated($"  [red]failed[/] in {r.Elapsed:mm\\:ss}: {r.Error}");
            }
        }
        int ok = names.Length - failed;
        AnsiConsole.MarkupLineInterpolated(
            $"{ok} notebook(s) ok, {failed} failed; executed notebooks and HTML in {runner.ReportsDir}"
        );
        return failed == 0 ? 0 : 1;
    }

    /// <summary>dotnet-interactive (VS Code's Polyglot Notebooks kernel, the Jupyter .NET kernel) and dotnet-repl,
    /// wherever they are installed, plus folders given on the command line.</summary>
    static int FixKernels(string[] extra)
    {
        var dirs = NotebookRunner.KernelFolders().Concat(extra.Select(Path.GetFullPath)).Distinct().ToList();
        if (dirs.Count == 0)
        {
            AnsiConsole.MarkupLine(
                "no .NET notebook kernel found (install dotnet-interactive, or pass its tools/net10.0/any folder)"
            );
            return 1;
        }
        foreach (var d in dirs)
            if (!NotebookRunner.FixKernel(d, m => AnsiConsole.MarkupLineInterpolated($"{m}")))
                AnsiConsole.MarkupLineInterpolated($"already fine: {d}");
        return 0;
    }

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(Directory.GetCurrentDirectory()); d is not null; d = d.Parent)
            if (
                File.Exists(Path.Combine(d.FullName, "Workbook.sln"))
                && Directory.Exists(Path.Combine(d.FullName, "notebooks"))
            )
                return d.FullName;
        throw new WorkbookException(
            "run this inside the workbook checkout (no Workbook.sln with notebooks/ above the current folder)"
        );
    }
}
