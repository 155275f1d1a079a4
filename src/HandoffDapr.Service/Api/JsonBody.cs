using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using HandoffDapr.Service.Configuration;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Api;

/// <summary>
/// Reads a JSON body with a hard size limit and turns every way it can be wrong into a 4xx problem, so a
/// client's mistake can never become a 500. The parser's message is not echoed: only where it failed.
/// </summary>
public static class JsonBody
{
    public static async Task<(T? Value, ProblemHttpResult? Problem)> ReadAsync<T>(
        HttpRequest request, JsonTypeInfo<T> typeInfo, IOptions<HandoffOptions> options, CancellationToken cancellationToken)
    {
        var (body, problem) = await ReadBytesAsync(request, options, cancellationToken);
        if (body is null)
        {
            return (default, problem);
        }

        using (body)
        {
            return Parse(body.Memory, typeInfo);
        }
    }

    /// <summary>The body's bytes in a pooled buffer (dispose it), or the problem that stopped reading it (an empty body is one).</summary>
    public static async Task<(PooledBody? Body, ProblemHttpResult? Problem)> ReadBytesAsync(
        HttpRequest request, IOptions<HandoffOptions> options, CancellationToken cancellationToken)
    {
        var limit = options.Value.MaxRequestBodyBytes;
        if (!IsJson(request.ContentType))
        {
            return (null, Problems.UnsupportedMediaType());
        }

        if (request.ContentLength > limit)
        {
            return (null, Problems.BodyTooLarge(limit));
        }

        var body = new PooledBody((int)Math.Min(request.ContentLength ?? 4096, limit) + 1);
        try
        {
            while (true)
            {
                var read = await request.Body.ReadAsync(body.FreeSpace(), cancellationToken);
                if (read == 0 && body.Length == 0)
                {
                    body.Dispose();
                    return (null, Problems.InvalidBody("The body is empty."));
                }

                if (read == 0)
                {
                    return (body, null);
                }

                body.Advance(read);
                if (body.Length > limit)
                {
                    body.Dispose();
                    return (null, Problems.BodyTooLarge(limit));
                }
            }
        }
        catch (BadHttpRequestException exception) when (exception.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            body.Dispose();
            return (null, Problems.BodyTooLarge(limit));
        }
        catch
        {
            body.Dispose();
            throw;
        }
    }

    private static (T? Value, ProblemHttpResult? Problem) Parse<T>(ReadOnlyMemory<byte> body, JsonTypeInfo<T> typeInfo)
    {
        try
        {
            var value = JsonSerializer.Deserialize(body.Span, typeInfo);
            return value is null ? (default, Problems.InvalidBody("The body must be a JSON object.")) : (value, null);
        }
        catch (JsonException exception)
        {
            var where = exception.Path is { Length: > 0 } path ? $" at {Bounded(path)}" : string.Empty;
            return (default, Problems.InvalidBody($"The body is not valid JSON of the expected shape{where}."));
        }
        catch (Exception exception) when (exception is InvalidOperationException or NotSupportedException or ArgumentException or FormatException or OverflowException)
        {
            return (default, Problems.InvalidBody("The body is not valid JSON of the expected shape."));
        }
    }

    private static bool IsJson(string? contentType) =>
        contentType is null
        || contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase)
        || contentType.StartsWith("application/cloudevents+json", StringComparison.OrdinalIgnoreCase)
        || contentType.StartsWith("text/json", StringComparison.OrdinalIgnoreCase);

    // A JSON path is built from the client's own property names: bound it and keep it printable.
    private static string Bounded(string path)
    {
        var cleaned = new string(path.Take(80).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return path.Length > 80 ? cleaned + "…" : cleaned;
    }
}

/// <summary>A request body read into a buffer rented from the shared pool; returned to it on dispose.</summary>
public sealed class PooledBody(int initialSize) : IDisposable
{
    private byte[] buffer = ArrayPool<byte>.Shared.Rent(initialSize);

    public int Length { get; private set; }

    public ReadOnlyMemory<byte> Memory => buffer.AsMemory(0, Length);

    public Memory<byte> FreeSpace()
    {
        if (Length == buffer.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
            buffer.AsSpan(0, Length).CopyTo(larger);
            ArrayPool<byte>.Shared.Return(buffer);
            buffer = larger;
        }

        return buffer.AsMemory(Length);
    }

    public void Advance(int count) => Length += count;

    public void Dispose()
    {
        var rented = Interlocked.Exchange(ref buffer, []);
        if (rented.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }
}
