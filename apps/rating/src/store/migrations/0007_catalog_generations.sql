-- catalog_generations: a counter per tenant, bumped in the same transaction by every write to one
-- of the tenant's catalog tables (a trigger, so no write path can forget it). Each rating process
-- caches catalogs; before rating a page (and before a Quote or a preview) it compares the
-- generations of the page's tenants with those its cache was loaded at and reloads the changed
-- ones. A catalog write committed through any replica (the API pods) is therefore seen by every
-- consumer at its next page: before, a consumer kept a tenant's catalog up to RATING_CACHE_TTL_MS
-- and rated the usage of a subscription created meanwhile as "no subscription in force", for good.
CREATE TABLE catalog_generations (
  tenant      TEXT   PRIMARY KEY,
  generation  BIGINT NOT NULL
);

CREATE FUNCTION rating_bump_catalog_generation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  t TEXT;
BEGIN
  IF TG_OP = 'DELETE' THEN t := OLD.tenant; ELSE t := NEW.tenant; END IF;
  INSERT INTO catalog_generations AS g (tenant, generation) VALUES (t, 1)
    ON CONFLICT (tenant) DO UPDATE SET generation = g.generation + 1;
  IF TG_OP = 'UPDATE' AND OLD.tenant IS DISTINCT FROM NEW.tenant THEN
    INSERT INTO catalog_generations AS g (tenant, generation) VALUES (OLD.tenant, 1)
      ON CONFLICT (tenant) DO UPDATE SET generation = g.generation + 1;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER customers_generation AFTER INSERT OR UPDATE OR DELETE ON customers FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER plans_generation AFTER INSERT OR UPDATE OR DELETE ON plans FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER plan_versions_generation AFTER INSERT OR UPDATE OR DELETE ON plan_versions FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER subscriptions_generation AFTER INSERT OR UPDATE OR DELETE ON subscriptions FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER subscription_phases_generation AFTER INSERT OR UPDATE OR DELETE ON subscription_phases FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER seat_changes_generation AFTER INSERT OR UPDATE OR DELETE ON seat_changes FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER price_overrides_generation AFTER INSERT OR UPDATE OR DELETE ON price_overrides FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER cost_rates_generation AFTER INSERT OR UPDATE OR DELETE ON cost_rates FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
CREATE TRIGGER guardrail_rules_generation AFTER INSERT OR UPDATE OR DELETE ON guardrail_rules FOR EACH ROW EXECUTE FUNCTION rating_bump_catalog_generation();
