using System.Text.Json;
using System.Text.Json.Nodes;

namespace Workbook;

/// <summary>Config files as JSON objects, with command-line overrides `key=value` (dotted keys reach nested objects;
/// a value that is not JSON is taken as a string).</summary>
public static class JsonConfig
{
    public static JsonObject Read(string? path)
    {
        if (path is null) return new JsonObject();
        if (!File.Exists(path)) throw new WorkbookException($"{path}: config file not found");
        try { return JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new JsonException("empty"); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { throw new WorkbookException($"{path}: not a JSON object ({e.Message})"); }
    }

    public static JsonObject WithOverrides(JsonObject node, IEnumerable<string>? overrides)
    {
        foreach (var kv in overrides ?? [])
        {
            var eq = kv.IndexOf('=');
            if (eq <= 0) throw new WorkbookException($"--set '{kv}': expected key=value (nested keys with dots, e.g. grpo.beta=0.1)");
            var keys = kv[..eq].Trim().Split('.');
            JsonNode? value;
            try { value = JsonNode.Parse(kv[(eq + 1)..]); } catch (JsonException) { value = JsonValue.Create(kv[(eq + 1)..].Trim()); }
            var target = node;
            foreach (var k in keys[..^1]) target = (target[k] ??= new JsonObject()).AsObject();
            target[keys[^1]] = value;
        }
        return node;
    }

    /// <summary>Deserialises, naming the file and the offending key on a type error or an unknown key.</summary>
    public static T Deserialize<T>(JsonObject node, string? path, JsonSerializerOptions options)
    {
        try { return node.Deserialize<T>(options) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new WorkbookException($"{path ?? "options"}: {e.Message.Split(". Path")[0]} (at {e.Path})"); }
    }
}
