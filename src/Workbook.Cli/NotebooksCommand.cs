using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Notebooks;

namespace Workbook.Cli;

public sealed class NotebooksCommand : Command<NotebooksCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<ACTION>")][Description("run")] public string Action { get; init; } = "";
        [CommandArgument(1, "[NAMES]")][Description("Notebook names (default: all), e.g. 01-theorems")] public string[] Names { get; init; } = [];
        [CommandOption("--quick")][Description("Small budgets (WORKBOOK_QUICK=1)")] public bool Quick { get; init; }
        public override ValidationResult Validate() => Action == "run" ? ValidationResult.Success() : ValidationResult.Error($"unknown action '{Action}': expected run");
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var root = FindRoot();
        var runner = new NotebookRunner(root, m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]"));
        runner.Prepare();
        var names = s.Names.Length > 0 ? s.Names : runner.All().ToArray();
        int failed = 0;
        foreach (var n in names)
        {
            AnsiConsole.MarkupLineInterpolated($"[bold]{n}[/] ...");
            var r = runner.Run(n, s.Quick);
            if (r.Ok) AnsiConsole.MarkupLineInterpolated($"  ok in {r.Elapsed:mm\\:ss}: {r.HtmlPath}");
            else { failed++; AnsiConsole.MarkupLineInterpolated($"  [red]failed[/] in {r.Elapsed:mm\\:ss}: {r.Error}"); }
        }
        AnsiConsole.MarkupLineInterpolated($"{names.Length - failed} notebook(s) ok, {failed} failed; executed notebooks and HTML in {runner.ReportsDir}");
        return failed == 0 ? 0 : 1;
    }

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(Directory.GetCurrentDirectory()); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Workbook.sln")) && Directory.Exists(Path.Combine(d.FullName, "notebooks"))) return d.FullName;
        throw new WorkbookException("run this inside the workbook checkout (no Workbook.sln with notebooks/ above the current folder)");
    }
}
