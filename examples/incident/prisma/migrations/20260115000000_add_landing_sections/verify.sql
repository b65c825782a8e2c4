-- True when all five landing sections exist (hero, features, cta, how-it-works, social-proof).
SELECT count(*) = 5
FROM "landing_page_content"
WHERE "key" IN ('hero', 'features', 'cta', 'how-it-works', 'social-proof');
