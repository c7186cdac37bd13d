using System.ComponentModel;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Verifiers;

namespace Workbook.Cli;

public sealed class VerifyCommand : Command<VerifyCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--verifier <NAME>")]
        [Description("gsm8k, gsm8k-flexible, math, cola-strict, cola-lenient, think-format")]
        public string Verifier { get; init; } = "";

        [CommandOption("--input <FILE>")]
        [Description("JSONL rows with 'completion' and 'reference' (and optionally 'prompt')")]
        public string Input { get; init; } = "";

        [CommandOption("--skip-bad")]
        [Description("Skip bad rows (counted and reported on stderr) instead of stopping")]
        public bool SkipBad { get; init; }

        [CommandOption("--json")]
        [Description("Summary as JSON too (rows are always JSON lines)")]
        public bool Json { get; init; }

        public override ValidationResult Validate() =>
            Verifier.Length == 0 || Input.Length == 0
                ? ValidationResult.Error("--verifier and --input are required")
                : ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var v = VerifierRegistry.Create(s.Verifier);
        var (rows, report) = RowReader.Read(
            s.Input,
            line =>
            {
                var o = RowReader.Object(line);
                var prompt =
                    o.TryGetProperty("prompt", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : "";
                return (prompt, RowReader.RequiredString(o, "completion"), RowReader.RequiredString(o, "reference"));
            },
            s.SkipBad
        );
        if (rows.Count == 0 && report.Skipped == 0)
            throw new WorkbookException($"--input {s.Input}: no rows (the file is empty)");
        int scored = 0,
            unscorable = 0,
            formatOk = 0;
        double sum = 0;
        foreach (var (prompt, completion, reference) in rows)
        {
            var r = v.Score(prompt, completion, reference);
            if (r.Reward is { } x)
            {
                scored++;
                sum += x;
            }
            else
                unscorable++;
            if (r.FormatOk)
                formatOk++;
            Console.WriteLine(
                JsonSerializer.Serialize(
                    new
                    {
                        reward = r.Reward,
                        extracted = r.Extracted,
                        format_ok = r.FormatOk,
                        note = r.Note,
                    },
                    ModelSettings.JsonOut
                )
            );
        }
        var summary = new
        {
            verifier = v.Name,
            rows = rows.Count,
            scored,
            unscorable,
            skipped_bad_rows = report.Skipped,
            mean_reward = scored > 0 ? sum / scored : (double?)null,
            format_ok_rate = rows.Count > 0 ? formatOk / (double)rows.Count : (double?)null,
        };
        if (s.Json)
            Console.WriteLine(JsonSerializer.Serialize(new { summary }, ModelSettings.JsonOut));
        else
            Console.Error.WriteLine(
                $"{v.Name}: {rows.Count} rows, mean reward {summary.mean_reward:F4} over {scored} scored, "
                    + $"{unscorable} unscorable reference(s), format ok {summary.format_ok_rate:P1}, "
                    + $"{report.Skipped} bad row(s) skipped"
            );
        if (report.Skipped > 0)
            Console.Error.WriteLine(string.Join("\n", report.FirstProblems));
        return 0;
    }
}
