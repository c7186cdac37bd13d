// Loaders for the dataset formats the workbook reads: GSM8K JSONL, CoLA (GLUE 4-column TSV or 2-column sentence/label),
// and generic JSONL with prompt/completion or chat messages.
using System.Text.Json;
using Workbook.Text;

namespace Workbook.Data;

public sealed record Gsm8kRow(string Question, string Answer)
{
    public string FinalAnswer =>
        Verifiers.MathAnswer.ExtractHash(Answer) ?? throw new RowException("answer has no '#### N' line");
}

public sealed record ColaRow(string Source, int Label, string Mark, string Sentence);

public sealed record PromptCompletionRow(IReadOnlyList<ChatMessage> Prompt, string Completion, string? Reference);

public static class Datasets
{
    public static (List<Gsm8kRow>, LoadReport) LoadGsm8k(string path, bool skipBad = false) =>
        RowReader.Read(
            path,
            line =>
            {
                var o = RowReader.Object(line);
                var row = new Gsm8kRow(RowReader.RequiredString(o, "question"), RowReader.RequiredString(o, "answer"));
                _ = row.FinalAnswer;
                return row;
            },
            skipBad
        );

    /// <summary>GLUE CoLA: source, label, mark, sentence (tab-separated); or the 2-column form sentence, label.
    /// A header line "sentence\tlabel" is allowed in the 2-column form.</summary>
    public static (List<ColaRow>, LoadReport) LoadCola(string path, bool skipBad = false)
    {
        bool first = true;
        var (rows, report) = RowReader.Read(
            path,
            line =>
            {
                var f = line.Split('\t');
                bool isHeader = first && f.Length == 2 && f[1].Trim() == "label";
                first = false;
                if (isHeader)
                    return null;
                return f.Length switch
                {
                    4 => new ColaRow(f[0], ParseLabel(f[1]), f[2], NonEmpty(f[3])),
                    2 => new ColaRow("", ParseLabel(f[1]), "", NonEmpty(f[0])),
                    _ => throw new RowException(
                        $"expected 4 tab-separated fields (source, label, mark, sentence) or 2 (sentence, label), "
                            + $"got {f.Length}"
                    ),
                };
            },
            skipBad
        );
        return (rows.Where(r => r is not null).Select(r => r!).ToList(), report);
    }

    static int ParseLabel(string s) =>
        s.Trim() switch
        {
            "0" => 0,
            "1" => 1,
            _ => throw new RowException($"label must be 0 or 1, got '{s}'"),
        };

    static string NonEmpty(string s) => s.Trim().Length > 0 ? s : throw new RowException("empty sentence");

    /// <summary>{"prompt": str, "completion": str, "reference"?: str} or {"messages": [{role, content}...]} (the last
    /// message must be the assistant's: it becomes the completion).</summary>
    public static (List<PromptCompletionRow>, LoadReport) LoadPromptCompletion(string path, bool skipBad = false) =>
        RowReader.Read(
            path,
            line =>
            {
                var o = RowReader.Object(line);
                string? reference =
                    o.TryGetProperty("reference", out var r) && r.ValueKind == JsonValueKind.String
                        ? r.GetString()
                        : null;
                if (o.TryGetProperty("messages", out var msgs))
                {
                    if (msgs.ValueKind != JsonValueKind.Array || msgs.GetArrayLength() < 2)
                        throw new RowException("'messages' must be an array of at least 2 messages");
                    var list = msgs.EnumerateArray()
                        .Select(m =>
                        {
                            if (m.ValueKind != JsonValueKind.Object)
                                throw new RowException("each message must be an object");
                            var role = RowReader.RequiredString(m, "role");
                            if (role is not ("system" or "user" or "assistant" or "tool"))
                                throw new RowException($"unknown role '{role}'");
                            return new ChatMessage(role, RowReader.RequiredString(m, "content"));
                        })
                        .ToList();
                    if (list[^1].Role != "assistant")
                        throw new RowException("the last message must be the assistant's reply");
                    return new PromptCompletionRow(list[..^1], list[^1].Content, reference);
                }
                return new PromptCompletionRow(
                    [ChatMessage.User(RowReader.RequiredString(o, "prompt"))],
                    RowReader.RequiredString(o, "completion"),
                    reference
                );
            },
            skipBad
        );
}
