// A compact vocabulary for small models: the Qwen3 token ids a task actually uses (its rendered prompts, expert and
// terse responses, and the chat-template tokens), renumbered 0..n-1. The mapping is lossless in both directions, so the
// same Qwen3 tokenizer serves a tiny model with a few hundred embedding rows and the full 151,936-row model.
using System.Text.Json;
using Workbook.Text;

namespace Workbook.Data;

public sealed class TaskVocabulary
{
    readonly int[] toQwen;
    readonly Dictionary<int, int> toCompact;

    public int Size => toQwen.Length;
    public IReadOnlyList<int> QwenIds => toQwen;

    public TaskVocabulary(IEnumerable<int> qwenIds)
    {
        toQwen = qwenIds.Distinct().Order().ToArray();
        toCompact = new Dictionary<int, int>(toQwen.Length);
        for (int i = 0; i < toQwen.Length; i++)
            toCompact[toQwen[i]] = i;
    }

    /// <summary>The identity mapping over a full vocabulary (for full-size models).</summary>
    public static TaskVocabulary Identity(int size) => new(Enumerable.Range(0, size));

    /// <param name="other">a second task the model also sees (forgetting_task): its text, and its held-out terse
    /// answers, join the vocabulary; null leaves the vocabulary exactly the task's own</param>
    public static TaskVocabulary Build(Qwen3Tokenizer tok, TaskData task, TaskData? other = null)
    {
        var ids = new HashSet<int>(tok.AddedTokens.Values);
        var rows = task.Train.Concat(task.Eval).Concat(task.Base);
        if (other is not null)
            rows = rows.Concat(other.Train).Concat(other.Eval).Concat(other.Base).Concat(other.HeldOutBase);
        foreach (var e in rows)
        {
            ids.UnionWith(ChatTemplate.Tokenize(tok, [.. e.Prompt, ChatMessage.Assistant(e.Expert)], false, false).Ids);
        }
        foreach (var text in task.ExtraVocabularyText.Concat(other?.ExtraVocabularyText ?? []))
            ids.UnionWith(tok.Encode(text));
        // ASCII printable single-byte tokens, so that generation can spell anything short
        foreach (var c in Enumerable.Range(32, 95))
            ids.UnionWith(tok.Encode(((char)c).ToString()));
        ids.UnionWith(tok.Encode("\n"));
        return new TaskVocabulary(ids);
    }

    public int ToCompact(int qwenId) =>
        toCompact.TryGetValue(qwenId, out var c)
            ? c
            : throw new WorkbookException($"token id {qwenId} ('{qwenId}') is not in the task vocabulary");

    public bool Contains(int qwenId) => toCompact.ContainsKey(qwenId);

    public int ToQwen(int compactId) => toQwen[compactId];

    public int[] ToCompact(IEnumerable<int> qwen) => qwen.Select(ToCompact).ToArray();

    public int[] ToQwen(IEnumerable<int> compact) => compact.Select(ToQwen).ToArray();

    public void Save(string path) => AtomicFile.WriteAllText(path, JsonSerializer.Serialize(new { qwen_ids = toQwen }));

    public static TaskVocabulary Load(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return new TaskVocabulary(
                doc.RootElement.GetProperty("qwen_ids").EnumerateArray().Select(x => x.GetInt32())
            );
        }
        catch (Exception e)
            when (e is JsonException or KeyNotFoundException or InvalidOperationException or FileNotFoundException)
        {
            throw new WorkbookException($"{path}: not a task vocabulary file ({e.Message})");
        }
    }
}
