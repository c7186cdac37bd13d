using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Experiments;
using Workbook.Reports;

namespace Workbook.Cli;

/// <summary>workbook report RUN_DIR | report --from-trl DIR [--out FILE]: re-render a run's report.html, or render the
/// coupling report of TRL runs (trainer_state.json files; layout in Experiments/TrlImport.cs). Replaces ReportCommand's
/// registration; its RUN_DIR form is unchanged.</summary>
public sealed class CouplingReportCommand : Command<CouplingReportCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "[RUN_DIR]")]
        [Description("A workbook run folder (re-renders its report.html)")]
        public string? RunDir { get; init; }

        [CommandOption("--from-trl <DIR>")]
        [Description(
            "TRL runs: DIR/[[<pipeline>/]][[seed-<N>/]]<k>-<stage>/trainer_state.json (what export-recipe writes)"
        )]
        public string? FromTrl { get; init; }

        [CommandOption("--out <FILE>")]
        [Description("With --from-trl: the HTML file (default DIR/coupling-report.html)")]
        public string? Out { get; init; }

        public override ValidationResult Validate()
        {
            if (RunDir is null == FromTrl is null)
                return ValidationResult.Error("give a RUN_DIR or --from-trl DIR (one of them)");
            if (Out is not null && FromTrl is null)
                return ValidationResult.Error("--out goes with --from-trl");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s)
    {
        if (s.RunDir is not null)
            return new ReportCommand().Execute(context, new ReportCommand.Settings { RunDir = s.RunDir });
        var path = TrlReport.Write(s.FromTrl!, s.Out);
        foreach (var f in TrlImport.Findings(TrlImport.Load(s.FromTrl!)).Where(f => f.Statement.Length > 0))
            AnsiConsole.MarkupLineInterpolated($"{f.Statement}");
        AnsiConsole.MarkupLineInterpolated($"[bold]report:[/] {path}");
        return 0;
    }
}
