// Line-oriented readers for JSONL and TSV. A bad row is an error naming file:line and the reason; with skipBad it is
// counted and skipped instead (the report keeps the first reasons), so nothing is dropped silently.
using System.Text.Json;

namespace Workbook.Data;

public static class RowReader
{
    public static (List<T> Rows, LoadReport Report) Read<T>(string path, Func<string, T> parse, bool skipBad, bool skipBlank = true)
    {
        if (!File.Exists(path)) throw new WorkbookException($"{path}: file not found");
        var rows = new List<T>();
        var problems = new List<string>();
        int skipped = 0, lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (skipBlank && line.Trim().Length == 0) continue;
            try { rows.Add(parse(line)); }
            catch (Exception e) when (e is RowException or JsonException or FormatException or InvalidOperationException or KeyNotFoundException)
            {
                var msg = $"{path}:{lineNo}: {(e is RowException ? e.Message : e is JsonException ? "invalid JSON (" + e.Message + ")" : e.Message)}";
                if (!skipBad) throw new WorkbookException(msg + " (use --skip-bad to skip bad rows)");
                skipped++;
                if (problems.Count < 5) problems.Add(msg);
            }
        }
        return (rows, new LoadReport(rows.Count, skipped, problems));
    }

    public static JsonElement Object(string line)
    {
        using var doc = JsonDocument.Parse(line);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new RowException("expected a JSON object");
        return doc.RootElement.Clone();
    }

    public static string RequiredString(JsonElement o, string field)
    {
        if (!o.TryGetProperty(field, out var v)) throw new RowException($"missing field '{field}'");
        if (v.ValueKind != JsonValueKind.String) throw new RowException($"field '{field}' must be a string");
        return v.GetString()!;
    }
}

public sealed class RowException(string message) : Exception(message);
