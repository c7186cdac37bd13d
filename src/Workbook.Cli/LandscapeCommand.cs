using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Experiments;
using Workbook.Reports;
using Workbook.Theory;

namespace Workbook.Cli;

/// <summary>The landscape constants on the small transformer; notebook 04's second half is this command.</summary>
public sealed class LandscapeCommand : Command<LandscapeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--quick")]
        [Description("Small budgets (CI)")]
        public bool Quick { get; init; }

        [CommandOption("--beta <BETA>")]
        [Description("KL weight β of the RL objective (default 0.5)")]
        public double? Beta { get; init; }

        [CommandOption("--runs <DIR>")]
        [Description("Folder of run folders")]
        [DefaultValue("runs")]
        public string Runs { get; init; } = "runs";
    }

    public override int Execute(CommandContext context, Settings s)
    {
        if (s.Beta is { } b && !(b > 0))
            throw new WorkbookException($"--beta: must be > 0 (got {b})");
        var o = s.Quick ? new TransformerLandscapeOptions().Quick() : new TransformerLandscapeOptions();
        if (s.Beta is { } beta)
            o = o with { Beta = beta };
        var r = Workbench.TransformerLandscape(
            s.Quick,
            o,
            s.Runs,
            m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]")
        );
        foreach (var line in TransformerLandscape.Describe(r))
            AnsiConsole.WriteLine(line);
        return 0;
    }
}
