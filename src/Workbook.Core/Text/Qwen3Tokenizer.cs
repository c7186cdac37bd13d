// The Qwen3 tokenizer from a Hugging Face tokenizer.json, on Microsoft.ML.Tokenizers' BPE:
//  - NFC normalisation, byte-level BPE with the file's vocab and merges, all 26 added tokens split out whole
//    (HF splits every added token, special or not; only special:true ones are dropped by skip_special_tokens)
//  - the Qwen split regex, run by .NET's Regex on a copy of the text in which each astral code point (a surrogate pair)
//    stands as one BMP character of the same class (letter, number or other). .NET's \p{L} does not match surrogates,
//    so without this "a𝑥b" would split into three pieces where HF keeps one; offsets are mapped back to the real text.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Workbook.Text;

public sealed class Qwen3Tokenizer
{
    public const string EndOfText = "<|endoftext|>",
        ImStart = "<|im_start|>",
        ImEnd = "<|im_end|>",
        Think = "<think>",
        EndThink = "</think>";

    readonly BpeTokenizer bpe;
    readonly HashSet<int> specialIds; // special:true added tokens (dropped by skipSpecial)
    public IReadOnlyDictionary<string, int> AddedTokens { get; }
    public string Source { get; }
    public int VocabularySize { get; } // base vocabulary + added tokens (151669 for Qwen3)

    public int EndOfTextId => AddedTokens[EndOfText];
    public int ImStartId => AddedTokens[ImStart];
    public int ImEndId => AddedTokens[ImEnd];

    Qwen3Tokenizer(BpeTokenizer bpe, Dictionary<string, int> added, HashSet<int> special, string source, int vocab)
    {
        this.bpe = bpe;
        AddedTokens = added;
        specialIds = special;
        Source = source;
        VocabularySize = vocab;
    }

    /// <summary>Loads tokenizer.json from a file path or from a model folder that contains one.</summary>
    public static Qwen3Tokenizer Load(string pathOrDir)
    {
        var path = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, "tokenizer.json") : pathOrDir;
        if (!File.Exists(path))
            throw new WorkbookException($"{path}: tokenizer.json not found");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new WorkbookException($"{path}: not valid JSON ({e.Message})");
        }
        using (doc)
        {
            try
            {
                var root = doc.RootElement;
                var model = root.GetProperty("model");
                if (model.GetProperty("type").GetString() != "BPE")
                    throw new WorkbookException($"{path}: model.type must be BPE");
                var vocab = model
                    .GetProperty("vocab")
                    .EnumerateObject()
                    .Select(p => new KeyValuePair<string, int>(p.Name, p.Value.GetInt32()))
                    .ToList();
                var merges = model
                    .GetProperty("merges")
                    .EnumerateArray()
                    .Select(m =>
                        m.ValueKind == JsonValueKind.Array ? m[0].GetString() + " " + m[1].GetString() : m.GetString()!
                    )
                    .ToList();
                var added = new Dictionary<string, int>();
                var special = new HashSet<int>();
                foreach (var t in root.GetProperty("added_tokens").EnumerateArray())
                {
                    var id = t.GetProperty("id").GetInt32();
                    added[t.GetProperty("content").GetString()!] = id;
                    if (t.TryGetProperty("special", out var s) && s.GetBoolean())
                        special.Add(id);
                }
                string pattern =
                    FindSplitPattern(root.GetProperty("pre_tokenizer"))
                    ?? throw new WorkbookException($"{path}: pre_tokenizer has no Split regex");
                var bpe = BpeTokenizer.Create(
                    new BpeOptions(vocab)
                    {
                        Merges = merges,
                        SpecialTokens = added,
                        ByteLevel = true,
                        PreTokenizer = new AstralSafeRegexPreTokenizer(pattern, added),
                        Normalizer = new NfcNormalizer(),
                    }
                );
                int size = Math.Max(
                    vocab.Count == 0 ? 0 : vocab.Max(kv => kv.Value) + 1,
                    added.Count == 0 ? 0 : added.Values.Max() + 1
                );
                return new Qwen3Tokenizer(bpe, added, special, path, size);
            }
            catch (KeyNotFoundException e)
            {
                throw new WorkbookException($"{path}: missing field ({e.Message})");
            }
            catch (FormatException e)
            {
                throw new WorkbookException($"{path}: a token id is not an integer ({e.Message})");
            }
            catch (ArgumentException e)
            {
                throw new WorkbookException($"{path}: the pre_tokenizer's Split regex is invalid ({e.Message})");
            }
            catch (InvalidOperationException e)
            {
                throw new WorkbookException($"{path}: malformed tokenizer.json ({e.Message})");
            }
        }
    }

    static string? FindSplitPattern(JsonElement pre)
    {
        if (pre.TryGetProperty("type", out var t) && t.GetString() == "Split")
            return pre.GetProperty("pattern").GetProperty("Regex").GetString();
        if (pre.TryGetProperty("pretokenizers", out var list))
            foreach (var p in list.EnumerateArray())
                if (FindSplitPattern(p) is { } s)
                    return s;
        return null;
    }

    public int[] Encode(string text) => bpe.EncodeToIds(text).ToArray();

    /// <summary>Ids with the character offsets (in NFC-normalised text) each token starts at.</summary>
    public (int[] ids, int[] starts, string normalized) EncodeWithOffsets(string text)
    {
        var toks = bpe.EncodeToTokens(text, out var normalized);
        return (toks.Select(t => t.Id).ToArray(), toks.Select(t => t.Offset.Start.Value).ToArray(), normalized ?? text);
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecial = false) =>
        bpe.Decode(skipSpecial ? ids.Where(i => !specialIds.Contains(i)) : ids, considerSpecialTokens: true);

    public bool IsSpecial(int id) => specialIds.Contains(id);

    sealed class NfcNormalizer : Normalizer
    {
        public override string Normalize(string s) => Nfc.Normalize(s);

        public override string Normalize(ReadOnlySpan<char> s) => Normalize(s.ToString());
    }
}

/// <summary>Splits out added tokens, then applies the split regex with astral code points mapped to same-class BMP
/// stand-ins.</summary>
public sealed class AstralSafeRegexPreTokenizer : PreTokenizer
{
    /// <summary>Longest pre-token (an unbroken run of letters, of punctuation, ...). BPE's cost grows with the square
    /// of a pre-token's length (640k letters took 24 s), so longer runs are an error rather than a hang.</summary>
    public const int MaxPreTokenChars = 20_000;

    readonly Regex split;
    readonly Regex? added;

    public AstralSafeRegexPreTokenizer(string pattern, IReadOnlyDictionary<string, int> addedTokens)
    {
        split = new Regex(pattern, RegexOptions.Compiled);
        if (addedTokens.Count > 0)
            added = new Regex(
                string.Join("|", addedTokens.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)),
                RegexOptions.Compiled
            );
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) =>
        PreTokenize(text.ToString());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        var result = new List<(int, int)>();
        if (string.IsNullOrEmpty(text))
            return result;
        int pos = 0;
        if (added is not null)
            foreach (Match m in added.Matches(text))
            {
                if (m.Index > pos)
                    SplitPlain(text, pos, m.Index - pos, result);
                result.Add((m.Index, m.Length));
                pos = m.Index + m.Length;
            }
        if (pos < text.Length)
            SplitPlain(text, pos, text.Length - pos, result);
        foreach (var (offset, len) in result)
            if (len > MaxPreTokenChars)
                throw new WorkbookException(
                    $"text has an unbroken run of {len:N0} characters at offset {offset} (starting "
                        + $"'{text.Substring(offset, 20)}...'); the tokenizer accepts at most {MaxPreTokenChars:N0}"
                );
        return result;
    }

    void SplitPlain(string text, int start, int length, List<(int, int)> result)
    {
        var segment = text.AsSpan(start, length);
        bool hasSurrogate = segment.IndexOfAnyInRange('\uD800', '\uDFFF') >= 0;
        if (!hasSurrogate)
        {
            foreach (var m in split.EnumerateMatches(segment))
                result.Add((start + m.Index, m.Length));
            return;
        }
        // one stand-in char per code point; map[i] = offset (in segment) of the code point behind stand-in i
        var sb = new StringBuilder(length);
        var map = new List<int>(length + 1);
        for (int i = 0; i < length; )
        {
            map.Add(i);
            if (char.IsHighSurrogate(segment[i]) && i + 1 < length && char.IsLowSurrogate(segment[i + 1]))
            {
                var cat = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(segment[i], segment[i + 1]));
                sb.Append(
                    cat switch
                    {
                        UnicodeCategory.UppercaseLetter
                        or UnicodeCategory.LowercaseLetter
                        or UnicodeCategory.TitlecaseLetter
                        or UnicodeCategory.ModifierLetter
                        or UnicodeCategory.OtherLetter => 'a',
                        UnicodeCategory.DecimalDigitNumber
                        or UnicodeCategory.LetterNumber
                        or UnicodeCategory.OtherNumber => '0',
                        _ => '#', // symbols, marks, private use: outside \s, \p{L}, \p{N} as in the Rust regex
                    }
                );
                i += 2;
            }
            else
            {
                sb.Append(segment[i]);
                i++;
            }
        }
        map.Add(length);
        foreach (var m in split.EnumerateMatches(sb.ToString()))
        {
            int a = map[m.Index],
                b = map[m.Index + m.Length];
            result.Add((start + a, b - a));
        }
    }
}
