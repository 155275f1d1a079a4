using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Tests;

/// <summary>Text a client chose, made fit for a log line: nothing in it may forge a line or change how the line reads.</summary>
public sealed class PrintableTextTests
{
    /// <summary>
    /// Control characters were made '?', but format characters went through: a bidi override or isolate shows the rest of
    /// the line reordered, and zero-width characters or tag characters (outside the BMP) hide text in it.
    /// </summary>
    [Theory]
    [InlineData("evt-\u202e1", "evt-?1")]
    [InlineData("a\u2067b\u2069", "a?b?")]
    [InlineData("x\u200by\ufeff", "x?y?")]
    [InlineData("tag\U000E0041", "tag?")]
    [InlineData("line\nforged", "line?forged")]
    public void Bounded_text_replaces_control_and_format_characters(string text, string logged) =>
        Assert.Equal(logged, PrintableText.Bounded(text, 80));

    [Fact]
    public void Bounded_text_keeps_what_is_visible_emoji_included_and_marks_a_cut()
    {
        Assert.Equal("naïve 😀", PrintableText.Bounded("naïve 😀", 80));
        Assert.Equal("abc…", PrintableText.Bounded("abcdef", 3));
    }

    /// <summary>
    /// A lone surrogate (sent as an escape in JSON, or half of a pair the bound cut) is no character: written to a log
    /// line as it is, it makes the line invalid UTF-16, which a log sink writes as it likes.
    /// </summary>
    [Fact]
    public void Bounded_text_replaces_a_lone_surrogate()
    {
        // Built in code: test data holding a lone surrogate may not survive xunit's serialization of its cases.
        Assert.Equal("evt-?", PrintableText.Bounded("evt-" + '\ud83d', 80));
        Assert.Equal("evt-?x", PrintableText.Bounded("evt-" + '\ude00' + "x", 80));
        Assert.Equal("a?x", PrintableText.Bounded("a" + '\ud83d' + "x", 80));
        Assert.Equal("ab?…", PrintableText.Bounded("ab\U0001F600c", 3));
    }

    /// <summary>
    /// Nothing to read: controls, format characters, separators of any kind (a paragraph separator alone included) and
    /// code points Unicode has not assigned, which a reader sees as nothing or as a box.
    /// </summary>
    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("\u2029")]
    [InlineData(" \u2029\u200b")]
    [InlineData("\u0378")]
    [InlineData("\U000E0041\u3000")]
    public void Text_of_no_visible_character_has_nothing_to_read(string? text) =>
        Assert.False(PrintableText.HasVisible(text));

    [Theory]
    [InlineData("x")]
    [InlineData("\u2029fix\u2029")]
    [InlineData("😀")]
    public void Text_with_a_visible_character_has_something_to_read(string text) =>
        Assert.True(PrintableText.HasVisible(text));

    /// <summary>
    /// U+2028 and U+2029 are line and paragraph separators (categories Zl, Zp), neither control nor format: a viewer
    /// that breaks lines on them (JavaScript-based ones, some editors) shows the rest as a line of its own. Reachable
    /// without credentials: the webhook route's integration id is logged (WebhookRejected) percent-decoded.
    /// </summary>
    [Theory]
    [InlineData("42\u2028warn: forged", "42?warn: forged")]
    [InlineData("42\u2029forged", "42?forged")]
    public void Bounded_text_replaces_line_and_paragraph_separators(string text, string logged) =>
        Assert.Equal(logged, PrintableText.Bounded(text, 80));
}
