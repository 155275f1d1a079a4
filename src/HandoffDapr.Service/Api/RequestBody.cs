using System.Buffers;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;

namespace HandoffDapr.Service.Api;

/// <summary>
/// Reads a whole request body up to a limit. Every way the body can break on the wire (too long, bad chunk
/// framing, a client that stops mid-body) becomes a 4xx problem here, so no route turns one into a 500.
/// </summary>
public static class RequestBody
{
    private const int InitialBufferBytes = 16 * 1024;
    private const string BrokenFraming = "The body is not well-formed HTTP (bad length or chunk framing).";

    public static async Task<(PooledBody? Body, ProblemHttpResult? Problem)> ReadAsync(
        HttpRequest request, long limit, CancellationToken cancellationToken)
    {
        if (request.ContentLength is { } declared && declared > limit)
        {
            await DiscardAsync(request, declared, cancellationToken);
            return (null, Problems.BodyTooLarge(limit));
        }

        if (IsEncoded(request))
        {
            // RFC 9110 §15.5.16: say which codings are accepted. Only the plain bytes are read (and signed).
            request.HttpContext.Response.Headers.AcceptEncoding = "identity";
            return (null, Problems.UnsupportedContentEncoding());
        }

        // Sized by what arrives, not by what the (possibly unauthenticated) client claims: the buffer grows as bytes come in.
        var body = new PooledBody((int)Math.Min(Math.Min(request.ContentLength ?? 4096, limit) + 1, InitialBufferBytes));
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
        catch (BadHttpRequestException exception)
        {
            // Kestrel's own checks: its body size limit (the same setting, when the body is chunked), its minimum data
            // rate (the body came too slowly), or broken framing.
            body.Dispose();
            return (null, exception.StatusCode switch
            {
                StatusCodes.Status413PayloadTooLarge => Problems.BodyTooLarge(limit),
                StatusCodes.Status408RequestTimeout => Problems.BodyTooSlow(),
                _ => Problems.InvalidBody(BrokenFraming),
            });
        }
        catch (IOException)
        {
            // Framing Kestrel reports as a broken stream rather than a bad request (a chunk size that overflows a
            // number), or a connection that ended mid-body (then nobody reads this answer, but nothing is logged as a fault).
            body.Dispose();
            return (null, Problems.InvalidBody(BrokenFraming));
        }
        catch
        {
            body.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads and drops a body refused for its declared length, up to <see cref="DiscardedBodyLimit"/>. Answered with the
    /// body unread, Kestrel closes the connection on the rest, and the reset can reach the client before the answer: an
    /// error instead of a 413 (to daprd, a failure to retry instead of the DROP that dead-letters the event).
    /// </summary>
    private static async Task DiscardAsync(HttpRequest request, long declared, CancellationToken cancellationToken)
    {
        // A client that waits for "100 Continue" has sent nothing yet: reading would ask it for the whole body.
        if (declared > DiscardedBodyLimit
            || request.Headers.Expect.Any(expect => expect?.Contains("100-continue", StringComparison.OrdinalIgnoreCase) == true)
            || request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is not { IsReadOnly: false } size)
        {
            return;
        }

        size.MaxRequestBodySize = declared;
        var scratch = ArrayPool<byte>.Shared.Rent(InitialBufferBytes);
        try
        {
            while (await request.Body.ReadAsync(scratch, cancellationToken) > 0)
            {
            }
        }
        catch (Exception exception) when (exception is BadHttpRequestException or IOException)
        {
            // Too slow or cut off: the 413 is answered all the same.
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    /// <summary>The most of a refused body read only to be dropped (daprd's max-body-size in k8s/ is 8 MiB).</summary>
    private const long DiscardedBodyLimit = 16 * 1024 * 1024;

    private static bool IsEncoded(HttpRequest request)
    {
        foreach (var coding in request.Headers.ContentEncoding)
        {
            if (!string.IsNullOrWhiteSpace(coding) && !coding.Trim().Equals("identity", StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
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
