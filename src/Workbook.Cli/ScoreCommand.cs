using System.ComponentModel;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using static TorchSharp.torch;

namespace Workbook.Cli;

public sealed class ScoreCommand : Command<ScoreCommand.Settings>
{
    public sealed class Settings : ModelIdsSettings
    {
        [CommandOption("--text <TEXT>")]
        [Description("Text to score (needs a tokenizer in the model folder)")]
        public string? Text { get; init; }

        [CommandOption("--top <K>")]
        [Description("How many (id, logit) pairs per position")]
        [DefaultValue(5)]
        public int Top { get; init; } = 5;

        public override ValidationResult Validate()
        {
            if (Ids is null == Text is null)
                return ValidationResult.Error("give exactly one of --ids or --text");
            if (Top < 1)
                return ValidationResult.Error($"--top: expected at least 1, got {Top}");
            return base.Validate();
        }
    }

    public override int Execute(CommandContext context, Settings s)
    {
        using var model = s.LoadModel();
        // model ids -> Qwen3 ids: the identity for full models, the checkpoint's vocab.json for compact-vocabulary ones
        var vocab = Workbook.Training.ModelSetup.VocabularyOf(s.Model, model.Config.VocabSize);
        var tok = s.Text is not null || vocab is not null ? s.LoadTokenizer() : null;
        int[] ids;
        if (s.Text is null)
            ids = ModelSettings.ParseIds(s.Ids!, "--ids");
        else if (vocab is null)
            throw new WorkbookException(
                "--text needs a model whose ids are Qwen3 ids or that has a vocab.json; use --ids"
            );
        else
            ids = vocab.ToCompact(tok!.Encode(s.Text));
        if (ids.Length == 0)
            throw new WorkbookException("--ids: no ids given");
        // the token's text beside its id (escaped, so spaces and newlines show)
        string Text(long id) =>
            vocab is null || tok is null || id < 0 || id >= vocab.Size
                ? ""
                : JsonSerializer.Serialize(tok.Decode([vocab.ToQwen((int)id)]), ModelSettings.JsonOut);
        foreach (var id in ids)
            if (id < 0 || id >= model.Config.VocabSize)
                throw new WorkbookException(
                    $"--ids: token id {id} is outside the vocabulary [0, {model.Config.VocabSize})"
                );
        var positions = new List<object>();
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var logits = model
                .Forward(tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]))[0]
                .to(ScalarType.Float32)
                .cpu();
            var lse = logits.logsumexp(-1);
            var argmax = logits.argmax(-1);
            var k = Math.Min(s.Top, (int)logits.shape[1]);
            var top = logits.topk(k, -1);
            var lseA = lse.data<float>().ToArray();
            var amA = argmax.data<long>().ToArray();
            var tv = top.values.data<float>().ToArray();
            var ti = top.indexes.data<long>().ToArray();
            var flat = logits.data<float>();
            long V = logits.shape[1];
            for (int t = 0; t < ids.Length; t++)
            {
                double? next = t + 1 < ids.Length ? flat[t * V + ids[t + 1]] - lseA[t] : null;
                positions.Add(
                    new
                    {
                        token = Text(ids[t]),
                        argmax = amA[t],
                        argmax_token = Text(amA[t]),
                        logsumexp = (double)lseA[t],
                        next_token_logprob = next,
                        top = Enumerable
                            .Range(0, k)
                            .Select(j => new object[] { ti[t * k + j], (double)tv[t * k + j], Text(ti[t * k + j]) })
                            .ToArray(),
                    }
                );
            }
        }
        if (s.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { ids, positions }, ModelSettings.JsonOut));
            return 0;
        }
        var table = new Table().AddColumns("pos", "id", "argmax", "logsumexp", "next_token_logprob", $"top-{s.Top}");
        for (int t = 0; t < ids.Length; t++)
        {
            dynamic p = positions[t];
            var tops = string.Join(" ", ((object[][])p.top).Select(x => $"{x[0]} {x[2]}:{(double)x[1]:F3}"));
            table.AddRow(
                t.ToString(),
                Markup.Escape($"{ids[t]} {Text(ids[t])}"),
                Markup.Escape($"{(long)p.argmax} {Text((long)p.argmax)}"),
                ((double)p.logsumexp).ToString("F4"),
                p.next_token_logprob is double d ? d.ToString("F4") : "-",
                Markup.Escape(tops)
            );
        }
        AnsiConsole.Write(table);
        return 0;
    }
}
