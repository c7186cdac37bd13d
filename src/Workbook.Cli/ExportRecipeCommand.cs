using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Experiments;

namespace Workbook.Cli;

/// <summary>workbook export-recipe --engine trl OUT [--config F] [--set k=v] [--dataset cola:FILE] [--model M]
/// </summary>
public sealed class ExportRecipeCommand : Command<ExportRecipeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<OUT>")]
        [Description("The script to write (never overwritten), e.g. recipe.py")]
        public string Out { get; init; } = "";

        [CommandOption("--engine <ENGINE>")]
        [Description("trl (the only engine so far)")]
        [DefaultValue("trl")]
        public string Engine { get; init; } = "trl";

        [CommandOption("--config <FILE>")]
        [Description("Experiment config (JSON, as run --config)")]
        public string? Config { get; init; }

        [CommandOption("--set <KEY=VALUE>")]
        [Description("Override a config value (repeatable)")]
        public string[] Set { get; init; } = [];

        [CommandOption("--dataset <SPEC>")]
        [Description("cola:FILE (the script's default training file)")]
        public string? Dataset { get; init; }

        [CommandOption("--model <NAME_OR_DIR>")]
        [Description("The script's default model (a Hub id or a folder; not checked here)")]
        public string? Model { get; init; }

        public override ValidationResult Validate() =>
            Engine != "trl"
                ? ValidationResult.Error($"--engine {Engine}: only trl is supported")
                : ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var overrides = s.Set.ToList();
        if (s.Dataset is not null)
            overrides.Add($"dataset=\"{s.Dataset}\"");
        // the model is for the machine that runs the script: not validated as a local folder here
        var cfg = ExperimentConfig.Load(s.Config, overrides.Append("model=null"));
        var model = s.Model ?? ConfigModel(s.Config, s.Set);
        var path = RecipeExport.Write(cfg with { Model = model }, s.Out);
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]wrote[/] {path}: python {path} --out runs-trl  (then: workbook report --from-trl runs-trl)"
        );
        return 0;
    }

    /// <summary>The config's model value as written (a Hub id need not exist here).</summary>
    static string? ConfigModel(string? config, IEnumerable<string> set)
    {
        var node = JsonConfig.WithOverrides(JsonConfig.Read(config), set);
        return node["model"]?.GetValue<string>();
    }
}
