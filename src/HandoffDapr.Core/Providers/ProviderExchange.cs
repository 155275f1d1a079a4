using HandoffDapr.Core.Model;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Providers;

/// <summary>
/// One request to a provider and what every provider client does with the answer: a transport failure or an error
/// status becomes a classified <see cref="ProviderFailure"/>, logged with the provider's own message bounded — the
/// message goes to the log only, never into a result.
/// </summary>
internal sealed partial class ProviderExchange(
    IProviderTransport transport,
    TimeProvider timeProvider,
    ILogger logger,
    string provider,
    Func<ProviderResponse, DateTimeOffset, ProviderFailure> classify,
    Func<ReadOnlyMemory<byte>, string?> errorMessage)
{
    private const int MaxLoggedMessage = 200;

    /// <summary>
    /// The run of characters looked for in a provider's message among the texts its request sent: a 400 that echoes
    /// the prompt or a follow-up's text would put it in the log, which never holds them.
    /// </summary>
    internal const int QuoteWindow = 32;

    internal const string WithheldMessage = "(withheld: it quotes the request)";

    public async Task<(ProviderResponse? Response, ProviderFailure? Failure)> SendAsync(ProviderRequest request, string operation, CancellationToken cancellationToken)
    {
        ProviderResponse response;
        try
        {
            response = await transport.SendAsync(request, cancellationToken);
        }
        catch (ProviderTransportException exception)
        {
            LogTransportFailure(provider, operation, exception.Kind, exception.RequestSent);
            return (null, ProviderFailureClassifier.FromTransport(exception));
        }

        if (response.IsSuccess)
        {
            return (response, null);
        }

        var failure = classify(response, timeProvider.GetUtcNow());
        var message = errorMessage(response.Body) ?? "(no message)";
        LogErrorAnswer(provider, operation, response.StatusCode, failure.FailureType, QuotesRequest(message, request.Body) ? WithheldMessage : Bounded(message));
        return (response, failure);
    }

    /// <summary>
    /// Whether the part of the message that would be logged holds, at one of the places a multiple of
    /// <see cref="QuoteWindow"/> into it, a run of that many characters that is also in a text the request sent:
    /// any quote of twice that length or more has one (a shorter one is a few words, not the prompt).
    /// </summary>
    internal static bool QuotesRequest(string message, ReadOnlyMemory<byte> body)
    {
        var logged = message.AsSpan(0, Math.Min(message.Length, MaxLoggedMessage));
        if (logged.Length < QuoteWindow || body.IsEmpty)
        {
            return false;
        }

        var sent = SentTexts(body);
        for (var start = 0; start + QuoteWindow <= logged.Length; start += QuoteWindow)
        {
            var window = logged.Slice(start, QuoteWindow);
            foreach (var text in sent)
            {
                if (text.AsSpan().Contains(window, StringComparison.Ordinal))
                {
                    return true;
                }
            }
        }

        return false;
    }

    // A JSON body's strings as the provider reads them (unescaped); a body of another kind as its text. A string whose
    // escaped form is shorter than the window is shorter unescaped too.
    private static List<string> SentTexts(ReadOnlyMemory<byte> body)
    {
        var texts = new List<string>();
        try
        {
            var reader = new Utf8JsonReader(body.Span);
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.String && reader.ValueSpan.Length >= QuoteWindow)
                {
                    texts.Add(reader.GetString()!);
                }
            }
        }
        catch (JsonException)
        {
            texts.Add(System.Text.Encoding.UTF8.GetString(body.Span));
        }

        return texts;
    }

    /// <summary>Sends, then reads the answer's JSON with <paramref name="read"/>; a body it cannot read is an unknown outcome.</summary>
    public async Task<ProviderResult<T>> SendAndReadAsync<T>(ProviderRequest request, string operation, Func<JsonElement, T?> read, CancellationToken cancellationToken)
        where T : class
    {
        var (response, failure) = await SendAsync(request, operation, cancellationToken);
        if (failure is not null)
        {
            return ProviderResult<T>.Failed(failure);
        }

        try
        {
            using var document = JsonDocument.Parse(response!.Body);
            return read(document.RootElement) is { } value ? ProviderResult<T>.Success(value) : Malformed<T>(response.StatusCode, operation);
        }
        catch (Exception exception) when (IsUnreadable(exception))
        {
            return Malformed<T>(response!.StatusCode, operation);
        }
    }

    /// <summary>
    /// What reading an answer of another shape throws: not JSON, or JSON whose elements are of other kinds than the
    /// reader expects (<see cref="JsonElement"/> throws <see cref="InvalidOperationException"/> for those), or a value
    /// of the right kind in another format (its typed getters, such as <c>GetDateTimeOffset</c>, throw
    /// <see cref="FormatException"/>; today's readers use the <c>Try</c> forms, a new one may not).
    /// </summary>
    public static bool IsUnreadable(Exception exception) => exception is JsonException or InvalidOperationException or FormatException;

    /// <summary>
    /// Some candidates could not be told ours or not (Cursor: an agent that shows no branch; Copilot: a task left
    /// unread, or without a session prompt): ours may be among them, so "not found" would risk a second launch. The
    /// attempt stays unknown and is looked up again later.
    /// </summary>
    public ProviderResult<ProviderAgent?> ReadsIncomplete(int unreadable)
    {
        LogReadsIncomplete(provider, unreadable);
        return ProviderResult<ProviderAgent?>.Failed(new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true));
    }

    /// <summary>A 2xx whose body is not what the API documents: the provider may have acted, so the outcome is unknown.</summary>
    public ProviderResult<T> Malformed<T>(int statusCode, string operation)
    {
        LogMalformedAnswer(provider, operation, statusCode);
        return ProviderResult<T>.Failed(ProviderFailureClassifier.MalformedAnswer(statusCode));
    }

    /// <summary>
    /// The agent list ran past the pages we read without finding the branch: the agent may be on a later page,
    /// so "not found" would risk a second launch. The attempt stays unknown and is looked up again later.
    /// </summary>
    public ProviderResult<ProviderAgent?> ListExhausted(int pages)
    {
        LogListExhausted(provider, pages);
        return ProviderResult<ProviderAgent?>.Failed(new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true));
    }

    // Format characters too: a bidi override would show the rest of the line reordered, a zero-width one hide text.
    private static string Bounded(string text) => Serialization.PrintableText.Bounded(text, MaxLoggedMessage);

    [LoggerMessage(EventId = 2001, EventName = "ProviderErrorAnswer", Level = LogLevel.Warning,
        Message = "{Provider} {Operation} answered {StatusCode}, classified {FailureType}: {ProviderMessage}")]
    private partial void LogErrorAnswer(string provider, string operation, int statusCode, string failureType, string providerMessage);

    [LoggerMessage(EventId = 2002, EventName = "ProviderTransportFailure", Level = LogLevel.Warning,
        Message = "{Provider} {Operation} got no answer ({Kind}); request sent: {RequestSent}")]
    private partial void LogTransportFailure(string provider, string operation, TransportFailureKind kind, bool requestSent);

    [LoggerMessage(EventId = 2003, EventName = "ProviderMalformedAnswer", Level = LogLevel.Warning,
        Message = "{Provider} {Operation} answered {StatusCode} with a body that is not what its API documents")]
    private partial void LogMalformedAnswer(string provider, string operation, int statusCode);

    [LoggerMessage(EventId = 2004, EventName = "ProviderListExhausted", Level = LogLevel.Warning,
        Message = "{Provider} agent list still had more after {Pages} pages; the launch stays unknown rather than risk a second agent")]
    private partial void LogListExhausted(string provider, int pages);

    [LoggerMessage(EventId = 2005, EventName = "ProviderReadsIncomplete", Level = LogLevel.Warning,
        Message = "{Provider}: {Unreadable} candidate(s) could not be read or told apart from the launch's agent; the launch stays unknown rather than risk a second agent")]
    private partial void LogReadsIncomplete(string provider, int unreadable);
}
