// Config files as JSON objects, with command-line overrides `key=value`. Choices:
//   1. Dotted keys reach nested objects; a value that is not JSON is taken as a string.
//   2. Numbers must be finite (1e400 parses as infinity in .NET): refused where they are read, naming the key.
//   3. An unknown key names the nearest known key (edit distance); a type error names the key and the expected type.
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Workbook;

public static class JsonConfig
{
    public static JsonObject Read(string? path)
    {
        if (path is null)
            return new JsonObject();
        if (Directory.Exists(path))
            throw new WorkbookException($"{path}: a folder, not a config file");
        if (!File.Exists(path))
            throw new WorkbookException($"{path}: config file not found");
        JsonObject o;
        try
        {
            o = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new JsonException("empty");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new WorkbookException($"{path}: not a JSON object ({e.Message})");
        }
        CheckFinite(o, path, "");
        return o;
    }

    public static JsonObject WithOverrides(JsonObject node, IEnumerable<string>? overrides)
    {
        foreach (var kv in overrides ?? [])
        {
            var eq = kv.IndexOf('=');
            if (eq <= 0)
                throw new WorkbookException(
                    $"--set '{kv}': expected key=value (nested keys with dots, e.g. grpo.beta=0.1)"
                );
            var keys = kv[..eq].Trim().Split('.');
            if (keys.Any(k => k.Length == 0))
                throw new WorkbookException($"--set '{kv}': empty key segment");
            JsonNode? value;
            try
            {
                value = JsonNode.Parse(kv[(eq + 1)..]);
            }
            catch (JsonException)
            {
                value = JsonValue.Create(kv[(eq + 1)..].Trim());
            }
            if (value is not null)
                CheckFinite(value, $"--set {kv}", kv[..eq].Trim());
            var target = node;
            foreach (var k in keys[..^1])
            {
                if (target[k] is { } existing && existing is not JsonObject)
                    throw new WorkbookException($"--set '{kv}': '{k}' is a value, not a group of options");
                target = (target[k] ??= new JsonObject()).AsObject();
            }
            target[keys[^1]] = value;
        }
        return node;
    }

    /// <summary>Merges <paramref name="from"/> into <paramref name="into"/>: nested objects key by key, values
    /// replace.</summary>
    public static JsonObject Merge(JsonObject into, JsonObject from)
    {
        foreach (var (k, v) in from.ToList())
        {
            if (v is JsonObject o && into[k] is JsonObject target)
                Merge(target, o);
            else
                into[k] = v?.DeepClone();
        }
        return into;
    }

    static void CheckFinite(JsonNode node, string where, string key)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (k, v) in o)
                    if (v is not null)
                        CheckFinite(v, where, key.Length == 0 ? k : $"{key}.{k}");
                break;
            case JsonArray a:
                foreach (var v in a)
                    if (v is not null)
                        CheckFinite(v, where, key);
                break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.Number:
                bool finite;
                try
                {
                    finite = double.IsFinite(v.GetValue<double>());
                }
                catch (FormatException)
                {
                    finite = false;
                }
                if (!finite)
                    throw new WorkbookException($"{where}: {key} = {v.ToJsonString()} is not a finite number");
                break;
        }
    }

    /// <summary>Deserialises, naming the file and the offending key on a type error or an unknown key.</summary>
    public static T Deserialize<T>(JsonObject node, string? path, JsonSerializerOptions options)
    {
        try
        {
            return node.Deserialize<T>(options) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            var where = path ?? "options";
            var segments = (e.Path ?? "$").TrimStart('$').Split('.', StringSplitOptions.RemoveEmptyEntries);
            var dotted = string.Join('.', segments);
            if (e.Message.Contains("could not be mapped") && segments.Length > 0)
            {
                var known = KnownKeys(typeof(T), segments[..^1], options);
                var prefix = segments.Length > 1 ? string.Join('.', segments[..^1]) + "." : "";
                var near = known.MinBy(k => Distance(k, segments[^1]));
                throw new WorkbookException(
                    $"{where}: unknown key '{dotted}'" + (near is null ? "" : $"; did you mean '{prefix}{near}'?")
                );
            }
            if (segments.Length > 0 && PropertyType(typeof(T), segments, options) is { } t)
            {
                JsonNode? v = node;
                foreach (var s in segments)
                    v = v is JsonObject o ? o[s] : null;
                var got = v?.ToJsonString() ?? "null";
                throw new WorkbookException($"{where}: {dotted}: expected {Describe(t)}, got {got}");
            }
            throw new WorkbookException($"{where}: {e.Message.Split(". Path")[0]} (at {e.Path})");
        }
    }

    static string Describe(Type t)
    {
        var u = Nullable.GetUnderlyingType(t) ?? t;
        var s =
            u == typeof(int) || u == typeof(long) ? "an integer"
            : u == typeof(double) || u == typeof(float) ? "a number"
            : u == typeof(bool) ? "true or false"
            : u == typeof(string) ? "a string"
            : u.IsArray ? "a list"
            : "an object";
        return Nullable.GetUnderlyingType(t) is null ? s : s + " or null";
    }

    static IEnumerable<PropertyInfo> Properties(Type t) =>
        t.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && p.GetCustomAttribute<JsonIgnoreAttribute>() is null);

    static string JsonName(PropertyInfo p, JsonSerializerOptions o) =>
        p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name
        ?? o.PropertyNamingPolicy?.ConvertName(p.Name)
        ?? p.Name;

    static Type? PropertyType(Type t, string[] path, JsonSerializerOptions o)
    {
        Type? cur = t;
        foreach (var s in path)
        {
            cur = cur is null ? null : Properties(cur).FirstOrDefault(p => JsonName(p, o) == s)?.PropertyType;
            if (cur is null)
                return null;
        }
        return cur;
    }

    /// <summary>The JSON keys an object at <paramref name="path"/> inside <paramref name="t"/> accepts.</summary>
    public static List<string> KnownKeys(Type t, string[] path, JsonSerializerOptions o) =>
        PropertyType(t, path, o) is { } inner ? Properties(inner).Select(p => JsonName(p, o)).ToList() : [];

    /// <summary>Levenshtein distance.</summary>
    public static int Distance(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++)
            d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int prev = d[0];
            d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int cur = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
                prev = cur;
            }
        }
        return d[b.Length];
    }
}
