using System.Text.Json;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Tests;

/// <summary>
/// What the runbook promises of a provider's logged error message: one that quotes 63 characters or more of a text the
/// request sent, within the 200 characters logged, is withheld, wherever the quote falls.
/// </summary>
public sealed class ProviderExchangeTests
{
    private static readonly string Prompt = string.Concat(Enumerable.Range(0, 40).Select(i => $"line {i}: the order service reads row {i * 7} before its lock. "));

    private static readonly ReadOnlyMemory<byte> Body = JsonSerializer.SerializeToUtf8Bytes(new { prompt = new { text = Prompt }, source = new { repository = "https://github.com/acme/shop" } });

    [Fact]
    public void A_quote_of_sixty_three_characters_is_caught_at_every_place_in_the_logged_part()
    {
        for (var at = 0; at + 63 <= 200; at++)
        {
            var message = new string('-', at) + Prompt.Substring(100 + at, 63) + new string('-', 40);
            Assert.True(ProviderExchange.QuotesRequest(message, Body), $"a quote at {at} was not caught");
        }
    }

    [Fact]
    public void A_quote_of_a_body_that_is_not_json_is_caught_in_its_text()
    {
        // Text a provider could still quote: read as JSON, it would give no strings at all.
        var body = System.Text.Encoding.UTF8.GetBytes(Prompt);

        Assert.True(ProviderExchange.QuotesRequest("Invalid: " + Prompt.Substring(100, 63), body));
    }

    [Fact]
    public void A_quote_past_the_logged_part_or_shorter_than_the_window_is_not_withheld()
    {
        // Only the first 200 characters are logged: a quote after them is not in the log.
        Assert.False(ProviderExchange.QuotesRequest(new string('-', 200) + Prompt[..150], Body));
        Assert.False(ProviderExchange.QuotesRequest("Invalid prompt: " + Prompt[..31] + new string('-', 60), Body));
        // Nothing was sent (a read or a stop): nothing can be quoted.
        Assert.False(ProviderExchange.QuotesRequest(Prompt[..120], ReadOnlyMemory<byte>.Empty));
    }
}
