using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Model;

namespace Workbook.Cli;

public sealed class GenerateCommand : Command<GenerateCommand.Settings>
{
    public sealed class Settings : ModelIdsSettings
    {
        [CommandOption("--prompt <TEXT>")]
        [Description("A user message, rendered with the Qwen3 chat template (generation prompt added)")]
        public string? Prompt { get; init; }

        [CommandOption("--thinking")]
        [Description("With --prompt: leave thinking on (default off: the template pre-fills an empty think block)")]
        public bool Thinking { get; init; }

        [CommandOption("--stop <TEXT>")]
        [Description("Stop string (repeatable)")]
        public string[] Stop { get; init; } = [];

        [CommandOption("--max-new-tokens <N>")]
        [Description("Tokens to generate at most (prompt + these <= max_position_embeddings)")]
        [DefaultValue(32)]
        public int MaxNewTokens { get; init; } = 32;

        [CommandOption("--greedy")]
        [Description("Argmax decoding")]
        public bool Greedy { get; init; }

        [CommandOption("--temperature <T>")]
        [Description("Sampling temperature (> 0)")]
        [DefaultValue(1.0)]
        public double Temperature { get; init; } = 1.0;

        [CommandOption("--top-p <P>")]
        [Description("Nucleus sampling: keep the smallest set of tokens with this mass, in (0, 1]]")]
        [DefaultValue(1.0)]
        public double TopP { get; init; } = 1.0;

        [CommandOption("--top-k <K>")]
        [Description("Sample from the K most likely tokens (0 = all)")]
        [DefaultValue(0)]
        public int TopK { get; init; }

        public override ValidationResult Validate()
        {
            if (Ids is null == Prompt is null)
                return ValidationResult.Error("give exactly one of --ids or --prompt");
            if (MaxNewTokens < 1)
                return ValidationResult.Error("--max-new-tokens must be >= 1");
            return base.Validate();
        }
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var tok = s.Prompt is not null || s.Stop.Length > 0 || !s.Json ? TryTokenizer(s) : null;
        if (s.Prompt is not null && tok is null)
            throw new WorkbookException("--prompt needs a tokenizer (--tokenizer DIR)");
        var ids = s.Prompt is not null
            ? Workbook
                .Text.ChatTemplate.Tokenize(
                    tok!,
                    [Workbook.Text.ChatMessage.User(s.Prompt)],
                    true,
                    s.Thinking ? null : false
                )
                .Ids
            : ModelSettings.ParseIds(s.Ids!, "--ids");
        using var model = s.LoadModel();
        if ((long)ids.Length + s.MaxNewTokens > model.Config.MaxPositionEmbeddings)
            throw new WorkbookException(
                $"--max-new-tokens {s.MaxNewTokens}: prompt ({ids.Length}) + new tokens exceed the model's "
                    + $"max_position_embeddings ({model.Config.MaxPositionEmbeddings})"
            );
        var opt = GenerationOptions.Sampling(
            s.MaxNewTokens,
            s.Temperature,
            s.TopP,
            s.TopK,
            model.Config.EosTokenIds
        ) with
        {
            Greedy = s.Greedy,
            Seed = s.Seed,
            StopStrings = s.Stop,
        };
        var sw = Stopwatch.StartNew();
        var c = Generation.Generate(model, [ids], opt, decode: tok is null ? null : t => tok.Decode(t))[0];
        sw.Stop();
        if (s.Json)
        {
            Console.WriteLine(
                JsonSerializer.Serialize(
                    new
                    {
                        prompt_ids = ids,
                        ids = c.Tokens,
                        text = tok?.Decode(c.Tokens),
                        logprobs = c.LogProbs,
                        truncated = c.Truncated,
                        stop_reason = c.StopReason,
                        tokens_per_second = c.Tokens.Length / sw.Elapsed.TotalSeconds,
                        native = NativeSetup.Status(), // the BLAS path and allocator these numbers came from
                    },
                    ModelSettings.JsonOut
                )
            );
            return 0;
        }
        if (tok is not null)
            AnsiConsole.MarkupLineInterpolated($"[bold]text:[/] {tok.Decode(c.Tokens)}");
        AnsiConsole.MarkupLineInterpolated($"[bold]ids:[/] {string.Join(",", c.Tokens)}");
        var end = c.Truncated ? "truncated at max_new_tokens" : "stopped: " + c.StopReason;
        AnsiConsole.MarkupLineInterpolated(
            $"[grey]{c.Tokens.Length} tokens in {sw.Elapsed.TotalSeconds:F2}s; {end}[/]"
        );
        return 0;
    }

    static Workbook.Text.Qwen3Tokenizer? TryTokenizer(Settings s)
    {
        try
        {
            return s.LoadTokenizer();
        }
        catch (WorkbookException) when (s.Prompt is null && s.Stop.Length == 0)
        {
            return null;
        } // ids in, ids out
    }
}
