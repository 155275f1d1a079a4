using HandoffDapr.Service.Api;

namespace HandoffDapr.Service.Tests.Security;

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
}
