using System.Text;

namespace Workbook.Text;

/// <summary>NFC as HF tokenizers applies it. .NET's string.Normalize throws on noncharacters (U+FFFE, U+FDD0, ...);
/// they never compose with anything, so the runs between them are normalised separately.</summary>
public static class Nfc
{
    public static string Normalize(string s)
    {
        try
        {
            return s.IsNormalized(NormalizationForm.FormC) ? s : s.Normalize(NormalizationForm.FormC);
        }
        catch (ArgumentException) { }
        var sb = new StringBuilder(s.Length);
        int runStart = 0;
        for (int i = 0; i < s.Length; )
        {
            var status = Rune.DecodeFromUtf16(s.AsSpan(i), out var r, out int n);
            bool breaker = status != System.Buffers.OperationStatus.Done || IsNonCharacter(r.Value);
            if (breaker)
            {
                sb.Append(NormalizeRun(s[runStart..i]));
                sb.Append(s, i, n);
                runStart = i + n;
            }
            i += n;
        }
        sb.Append(NormalizeRun(s[runStart..]));
        return sb.ToString();
    }

    static string NormalizeRun(string s) => s.Length == 0 ? s : s.Normalize(NormalizationForm.FormC);

    static bool IsNonCharacter(int v) => (v >= 0xFDD0 && v <= 0xFDEF) || (v & 0xFFFE) == 0xFFFE;
}
