// Qwen3's chat template (tokenizer_config.json "chat_template"), transcribed from its Jinja source for conversations
// without a tools list: ChatML turns, add_generation_prompt, enable_thinking=false pre-filling
// "<think>\n\n</think>\n\n",
// reasoning stripped from assistant turns before the last user query and re-rendered after it, tool calls / tool
// results. Rendering also records where each assistant reply sits, so SFT can put the loss on the assistant's tokens
// only.
using System.Text;

namespace Workbook.Text;

public sealed record ToolCall(string Name, string Arguments);

public sealed record ChatMessage(
    string Role,
    string Content,
    string? ReasoningContent = null,
    IReadOnlyList<ToolCall>? ToolCalls = null
)
{
    public static ChatMessage System(string c) => new("system", c);

    public static ChatMessage User(string c) => new("user", c);

    public static ChatMessage Assistant(string c, string? reasoning = null) => new("assistant", c, reasoning);
}

/// <summary>A rendered conversation. <see cref="AssistantSpans"/> are character ranges [start, end) of each assistant
/// reply: from after "&lt;|im_start|&gt;assistant\n" (and after an empty template think block) through
/// "&lt;|im_end|&gt;".</summary>
public sealed record RenderedChat(string Text, IReadOnlyList<(int Start, int End)> AssistantSpans);

/// <summary>Token ids with a parallel mask: true where the token belongs to an assistant reply.</summary>
public sealed record TokenizedChat(int[] Ids, bool[] AssistantMask, string Text);

public static class ChatTemplate
{
    const string EmptyThink = "<think>\n\n</think>\n\n";

    /// <param name="enableThinking">null = not passed to the template (the default), as in transformers</param>
    public static RenderedChat Render(
        IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt,
        bool? enableThinking = null
    )
    {
        if (messages.Count == 0)
            throw new WorkbookException("chat template: no messages");
        foreach (var m in messages)
            if (m.Role is not ("system" or "user" or "assistant" or "tool"))
                throw new WorkbookException(
                    $"chat template: unknown role '{m.Role}' (expected system, user, assistant or tool)"
                );
        var sb = new StringBuilder();
        var spans = new List<(int, int)>();
        if (messages[0].Role == "system")
            sb.Append("<|im_start|>system\n").Append(messages[0].Content).Append("<|im_end|>\n");

        int lastQuery = messages.Count - 1;
        for (int i = messages.Count - 1; i >= 0; i--)
        {
            var m = messages[i];
            if (
                m.Role == "user"
                && !(m.Content.StartsWith("<tool_response>") && m.Content.EndsWith("</tool_response>"))
            )
            {
                lastQuery = i;
                break;
            }
        }

        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            bool first = i == 0,
                last = i == messages.Count - 1;
            if (m.Role == "user" || (m.Role == "system" && !first))
                sb.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
            else if (m.Role == "assistant")
            {
                string content = m.Content,
                    reasoning = "";
                if (m.ReasoningContent is not null)
                    reasoning = m.ReasoningContent;
                else if (m.Content.Contains("</think>"))
                {
                    content = LStrip(
                        m.Content[(m.Content.LastIndexOf("</think>", StringComparison.Ordinal) + "</think>".Length)..]
                    );
                    var before = RStrip(m.Content[..m.Content.IndexOf("</think>", StringComparison.Ordinal)]);
                    reasoning = LStrip(
                        before.Contains("<think>")
                            ? before[(before.LastIndexOf("<think>", StringComparison.Ordinal) + "<think>".Length)..]
                            : before
                    );
                }
                sb.Append("<|im_start|>assistant\n");
                int start = sb.Length;
                if (i > lastQuery && (last || reasoning.Length > 0))
                {
                    var block = "<think>\n" + Strip(reasoning) + "\n</think>\n\n";
                    sb.Append(block);
                    if (block == EmptyThink)
                        start = sb.Length; // template boilerplate, not the assistant's words
                    sb.Append(LStrip(content));
                }
                else
                    sb.Append(content);
                if (m.ToolCalls is { Count: > 0 })
                    for (int k = 0; k < m.ToolCalls.Count; k++)
                    {
                        if ((k == 0 && content.Length > 0) || k > 0)
                            sb.Append('\n');
                        sb.Append("<tool_call>\n{\"name\": \"")
                            .Append(m.ToolCalls[k].Name)
                            .Append("\", \"arguments\": ")
                            .Append(m.ToolCalls[k].Arguments)
                            .Append("}\n</tool_call>");
                    }
                sb.Append("<|im_end|>");
                spans.Add((start, sb.Length));
                sb.Append('\n');
            }
            else if (m.Role == "tool")
            {
                if (first || messages[i - 1].Role != "tool")
                    sb.Append("<|im_start|>user");
                sb.Append("\n<tool_response>\n").Append(m.Content).Append("\n</tool_response>");
                if (last || messages[i + 1].Role != "tool")
                    sb.Append("<|im_end|>\n");
            }
        }
        if (addGenerationPrompt)
        {
            sb.Append("<|im_start|>assistant\n");
            if (enableThinking == false)
                sb.Append(EmptyThink);
        }
        return new RenderedChat(sb.ToString(), spans);
    }

    /// <summary>Renders (after NFC-normalising the messages, so character offsets survive tokenisation) and
    /// tokenises.</summary>
    public static TokenizedChat Tokenize(
        Qwen3Tokenizer tok,
        IReadOnlyList<ChatMessage> messages,
        bool addGenerationPrompt,
        bool? enableThinking = null
    )
    {
        var nfc = messages
            .Select(m =>
                m with
                {
                    Content = Nfc.Normalize(m.Content),
                    ReasoningContent = m.ReasoningContent is null ? null : Nfc.Normalize(m.ReasoningContent),
                }
            )
            .ToList();
        var r = Render(nfc, addGenerationPrompt, enableThinking);
        var (ids, starts, normalized) = tok.EncodeWithOffsets(r.Text);
        if (normalized != r.Text)
            throw new InvalidOperationException("rendered chat changed under NFC normalisation");
        var mask = new bool[ids.Length];
        for (int t = 0; t < ids.Length; t++)
            foreach (var (s, e) in r.AssistantSpans)
                if (starts[t] >= s && starts[t] < e)
                {
                    mask[t] = true;
                    break;
                }
        return new TokenizedChat(ids, mask, r.Text);
    }

    static string LStrip(string s) => s.TrimStart('\n');

    static string RStrip(string s) => s.TrimEnd('\n');

    static string Strip(string s) => s.Trim('\n');
}
